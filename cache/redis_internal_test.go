package cache

import (
	"context"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/redistest"
)

// TestLockScripts: the lock is taken by one token at a time, released and
// renewed only by the token that holds it, and never taken while the
// alert's answer is kept.
func TestLockScripts(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		const id, lockTTL = "da637472900382838869_1364969609", 30 * time.Second
		rdb := s.Client(t)
		ctx := context.Background()
		lockTTLOf := func(r *Redis) time.Duration {
			t.Helper()
			d, err := rdb.PTTL(ctx, r.lockKey(id)).Result()
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		for _, tt := range []struct {
			name string
			// do acts on a lock held by owner and reports whether the lock
			// is to be held afterwards.
			do func(t *testing.T, r *Redis, owner string) bool
		}{
			{"another replica finds it held", func(t *testing.T, r *Redis, _ string) bool {
				l, err := r.look(id, nil)
				if err != nil || l.state != lookHeld || l.lockTTL <= 0 || l.lockTTL > lockTTL {
					t.Errorf("look = %+v, %v; want held, with its time left", l, err)
				}
				return true
			}},
			{"another token cannot release it", func(t *testing.T, r *Redis, _ string) bool {
				r.keep(id, newToken(), nil, 0, nil)
				return true
			}},
			{"another token cannot renew it", func(t *testing.T, r *Redis, _ string) bool {
				rdb.PExpire(ctx, r.lockKey(id), time.Second)
				if held, err := r.renew(id, newToken()); err != nil || held {
					t.Errorf("renew = %v, %v", held, err)
				}
				if d := lockTTLOf(r); d > time.Second {
					t.Errorf("renewed by another token: expires in %v", d)
				}
				return true
			}},
			{"its owner renews it", func(t *testing.T, r *Redis, owner string) bool {
				rdb.PExpire(ctx, r.lockKey(id), time.Second)
				if held, err := r.renew(id, owner); err != nil || !held {
					t.Errorf("renew = %v, %v", held, err)
				}
				if d := lockTTLOf(r); d <= time.Second {
					t.Errorf("not renewed: expires in %v", d)
				}
				return true
			}},
			{"its owner releases it", func(t *testing.T, r *Redis, owner string) bool {
				r.keep(id, owner, nil, 0, nil)
				return false
			}},
			{"its owner releases it with the answer", func(t *testing.T, r *Redis, owner string) bool {
				r.keep(id, owner, []byte(notFound), time.Minute, nil)
				l, err := r.look(id, nil)
				if err != nil || l.state != lookHit || string(l.answer.value) != notFound {
					t.Errorf("look = %+v, %v; want the answer", l, err)
				}
				return false
			}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				r, err := NewRedis(rdb, RedisOptions{Prefix: s.Prefix() + "{" + tt.name + "}:", LockTTL: lockTTL, Timeout: 10 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				l, err := r.look(id, nil)
				if err != nil || l.state != lookLocked || l.token == "" {
					t.Fatalf("look = %+v, %v; want the lock taken", l, err)
				}
				if d := lockTTLOf(r); d <= 0 || d > lockTTL {
					t.Fatalf("the lock expires in %v, want at most %v", d, lockTTL)
				}
				held := tt.do(t, r, l.token)
				n, err := rdb.Exists(ctx, r.lockKey(id)).Result()
				if err != nil {
					t.Fatal(err)
				}
				if (n == 1) != held {
					t.Errorf("lock held: %v, want %v", n == 1, held)
				}
			})
		}
	})
}
