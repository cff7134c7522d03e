package budget

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/redistest"
)

// TestRedisLostStateExactWait: on a Redis that lost its state, the calls a
// replica wrote back count as before, and a dead replica's call, unknown,
// counts as one of the phantom calls that fill the window at the reset
// and run until a lease after it: the waits told are exact.
func TestRedisLostStateExactWait(t *testing.T) {
	s := redistest.NewMini(t)
	m := s.Mini()
	t0 := time.Unix(1_800_000_000, 0)
	m.SetTime(t0)
	const per, lease = 10 * time.Second, 5 * time.Second
	limits := Limits{{3, per}}
	alive := newShared(t, s, limits, RedisOptions{Lease: lease})
	dead := newShared(t, s, limits, RedisOptions{Lease: lease})
	endCall(t, dead, grantNowRedis(t, dead, PriorityHigh).id)
	dead.Close() // its memory goes with it
	m.SetTime(t0.Add(time.Second))
	mine := endCall(t, alive, grantNowRedis(t, alive, PriorityHigh).id)
	reset := t0.Add(2 * time.Second)
	m.SetTime(reset)
	s.Lose(t)
	m.SetTime(reset) // the new server's clock: the same instant

	// One call written back and two phantom calls fill the window: the
	// first to stop counting is the call written back.
	res := refused(t, alive, PriorityHigh)
	if got, want := res.now.Add(res.wait), mine.Add(per); !got.Equal(want) {
		t.Fatalf("after the loss: told %v, want the call written back's end plus the window, %v", got, want)
	}
	rdb := s.Client(t)
	ctx := context.Background()
	if lost, _ := rdb.HGet(ctx, alive.keys[3], "lost").Result(); lost != "1" {
		t.Fatalf("the epoch is not marked lost: %q", lost)
	}
	if n, _ := rdb.ZCard(ctx, alive.keys[4]).Result(); n != 1 {
		t.Fatalf("%d calls seeded, want 1", n)
	}

	// Once it aged out, the phantom calls leave room for one call; then the
	// next call waits for them: until the reset plus the lease, plus the window.
	m.SetTime(mine.Add(per).Add(time.Microsecond))
	grantNowRedis(t, alive, PriorityHigh)
	res = refused(t, alive, PriorityHigh)
	if got, want := res.now.Add(res.wait), reset.Add(lease+per); !got.Equal(want) {
		t.Fatalf("behind the phantom calls: told %v, want the reset plus the lease and the window, %v", got, want)
	}
	m.SetTime(reset.Add(lease + per).Add(time.Microsecond))
	grantNowRedis(t, alive, PriorityHigh)
}

// TestRedisNewStateIsNotLost: a Redis that a fleet uses for the first
// time (no replica had seen an epoch) grants the whole budget at once.
func TestRedisNewStateIsNotLost(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{3, time.Minute}}
		a := newShared(t, s, limits, RedisOptions{})
		b := newShared(t, s, limits, RedisOptions{})
		grantNowRedis(t, a, PriorityHigh)
		grantNowRedis(t, b, PriorityHigh)
		grantNowRedis(t, a, PriorityHigh)
		refused(t, b, PriorityHigh)
		if lost, _ := s.Client(t).HGet(context.Background(), a.keys[3], "lost").Result(); lost != "0" {
			t.Fatalf("a new state is marked lost: %q", lost)
		}
	})
}

// TestRedisLostPauseIsWrittenBack: a pause that went with the lost state
// is written back by the replica that set it.
func TestRedisLostPauseIsWrittenBack(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{100, time.Minute}}
		a := newShared(t, s, limits, RedisOptions{})
		grantNowRedis(t, a, PriorityHigh)
		a.PauseUntil(time.Now().Add(time.Minute))
		s.Lose(t)
		res := tryUntilAnswered(t, a, PriorityHigh)
		if res.granted || res.wait < 50*time.Second {
			t.Fatalf("after the loss a minute's pause leaves: granted %v, wait %v", res.granted, res.wait)
		}
	})
}

// tryUntilAnswered asks until Redis answers: after a restart the first
// command on a cut connection fails.
func tryUntilAnswered(t *testing.T, r *Redis, p Priority) tryResult {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // guards against a hang only
	for {
		res, err := r.try(p)
		if err == nil {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis does not answer: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRedisSeedIsIdempotent: replicas writing their calls back at once,
// each twice, add every call once, and all learn one epoch.
func TestRedisSeedIsIdempotent(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{1000, time.Minute}}
		var bs []*Redis
		want := map[string]int64{}
		for range 3 {
			r := newShared(t, s, limits, RedisOptions{})
			for i := range 20 {
				g := grantNowRedis(t, r, PriorityHigh)
				score := g.now.Add(r.opts.Lease).UnixMicro()
				if i%2 == 0 {
					score = endCall(t, r, g.id).UnixMicro()
				}
				want[g.id] = score
			}
			bs = append(bs, r)
		}
		s.Lose(t)
		rdb := s.Client(t)
		ctx := context.Background()
		deadline := time.Now().Add(30 * time.Second) // guards against a hang only
		for rdb.Ping(ctx).Err() != nil {
			if time.Now().After(deadline) {
				t.Fatal("Redis does not answer after the loss")
			}
			time.Sleep(10 * time.Millisecond)
		}
		var wg sync.WaitGroup
		errs := make(chan error, 2*len(bs))
		for _, r := range bs {
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var err error
					for range 100 { // a cut connection fails once
						if err = r.seed(); err == nil {
							return
						}
					}
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, r := range bs[1:] {
			if r.epoch != bs[0].epoch || r.epoch == "" {
				t.Fatalf("the replicas learned the epochs %q and %q", bs[0].epoch, r.epoch)
			}
		}
		for _, key := range []string{bs[0].keys[0], bs[0].keys[4]} {
			got, err := rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("%s holds %d calls, want %d", key, len(got), len(want))
			}
			for _, z := range got {
				if w, ok := want[z.Member.(string)]; !ok || int64(z.Score) != w {
					t.Fatalf("%s: call %v at %v, want %v (known %v)", key, z.Member, int64(z.Score), w, ok)
				}
			}
		}
		if lost, _ := rdb.HGet(ctx, bs[0].keys[3], "lost").Result(); lost != "1" {
			t.Fatalf("the epoch is not marked lost: %q", lost)
		}
	})
}

// TestRedisLostStateNeverExceeds drives three replicas of one budget, as
// TestRedisNeverExceeds does; one of them stops and is gone (its memory
// with it), and at once Redis loses its state while the two others go on.
// Over the whole run, the calls of all three, before and after the loss,
// are checked over every interval on Redis's clock.
func TestRedisLostStateNeverExceeds(t *testing.T) {
	redistest.Each(t, func(t *testing.T, s *redistest.Server) {
		limits := Limits{{3, 50 * time.Millisecond}, {8, 250 * time.Millisecond}}
		const replicas, callers, before, after = 3, 3, 4, 4
		opts := RedisOptions{Lease: 300 * time.Millisecond, hold: 200 * time.Millisecond}
		var bs []*Redis
		for range replicas {
			bs = append(bs, newShared(t, s, limits, opts))
		}
		var (
			mu     sync.Mutex
			spans  []span
			lost   atomic.Bool
			wg     sync.WaitGroup
			deadWg sync.WaitGroup
			errs   = make(chan error, replicas*callers)
		)
		call := func(r *Redis, rng *rand.Rand) error {
			p := priorities[rng.IntN(numPriorities)]
			for {
				g, err := r.acquire(WithPriority(context.Background(), p))
				if errors.Is(err, ErrStoreUnavailable) {
					time.Sleep(time.Millisecond) // the restart cut the connection
					continue
				}
				if err != nil {
					return err
				}
				time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
				end := r.end(g.id)
				if end.IsZero() {
					// Its end was not written: it counts until its lease ends,
					// in Redis and in this replica's memory alike.
					end = g.at.Add(r.opts.Lease)
				}
				mu.Lock()
				spans = append(spans, span{start: g.at, end: end, prio: p})
				mu.Unlock()
				return nil
			}
		}
		for i := range replicas * callers {
			rng := rand.New(rand.NewPCG(uint64(i), 11))
			r := bs[i%replicas]
			wg.Add(1)
			if i%replicas == 0 {
				deadWg.Add(1)
			}
			go func() {
				defer wg.Done()
				n := before
				if i%replicas == 0 {
					defer deadWg.Done()
				} else {
					n = before + after
				}
				for k := 0; k < n || (i%replicas != 0 && !lost.Load()); k++ {
					if err := call(r, rng); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		deadWg.Wait()
		bs[0].Close()
		bs[1].mineMu.Lock()
		old := bs[1].epoch
		bs[1].mineMu.Unlock()
		s.Lose(t)
		lost.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		checkSpans(t, spans, limits)
		if bs[1].epoch == old || bs[2].epoch != bs[1].epoch {
			t.Fatalf("epochs: %q before the loss, %q and %q after it", old, bs[1].epoch, bs[2].epoch)
		}
		t.Logf("%d calls in %v", len(spans), spans[len(spans)-1].start.Sub(spans[0].start))
	})
}
