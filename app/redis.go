package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/defender"
)

// callBudget is what the app needs of its call budget: a budget.Window of
// its own, or a budget.Redis shared by the fleet.
type callBudget interface {
	defender.Budget
	Waiting() int
	Close()
}

// leaseMargin is added to ENRICHER_DEFENDER_TIMEOUT for the lease of a
// call in Redis: after its grant a call may still renew its token before
// it is sent, and only then does the attempt's timeout start.
const leaseMargin = 15 * time.Second

// newBudget builds the call budget: shared in Redis when ENRICHER_REDIS_URL
// is set, else the process's own, kept in ENRICHER_BUDGET_STATE_FILE when
// that is set.
func (a *App) newBudget(cfg config.Config, deps Deps, ep defender.Endpoint, reg prometheus.Registerer) (callBudget, error) {
	if !cfg.RedisURL.IsSet() {
		opts := []budget.Option{budget.WithReserve(cfg.DefenderReserve), budget.WithRegisterer(reg)}
		if cfg.BudgetStateFile != "" {
			// A call read back counts as ended an attempt's timeout after
			// its grant: the longest it can have taken.
			opts = append(opts, budget.WithStateFile(cfg.BudgetStateFile, cfg.DefenderTimeout), budget.WithLogger(a.log))
		}
		w, err := budget.New(cfg.DefenderRateLimits, nil, opts...)
		if err != nil {
			if cfg.BudgetStateFile != "" {
				return nil, fmt.Errorf("%s: %w; give it a file in a directory the connector can write, or leave it empty", config.Env("budget-state-file"), err)
			}
			return nil, err
		}
		if cfg.BudgetStateFile != "" {
			r := w.Restored()
			a.log.Info("call budget restored from its state file", "path", cfg.BudgetStateFile, "calls", r.Calls, "paused_until", r.PausedUntil, "last_line_cut", r.Cut)
		}
		return w, nil
	}
	if cfg.BudgetStateFile != "" {
		a.log.Info("the call budget is kept in Redis: the state file is not used", "path", cfg.BudgetStateFile)
	}
	rdb, err := newRedisClient(cfg, nil)
	if err != nil {
		return nil, err
	}
	// go-redis writes its own lines (a pool that cannot dial) to stderr
	// in a format of its own; they go through the connector's logger at
	// debug level instead: the failures that matter come back as command
	// errors, logged where they happen.
	redis.SetLogger(redisLogger{a.log})
	// The limit is the tenant's and the application's: replicas of one
	// tenant share a budget, fleets of two tenants do not.
	tenant := getenv(deps)("AZURE_TENANT_ID")
	prefix := budget.RedisPrefix(tenant, ep.BaseURL.Host)
	b, err := budget.NewRedis(rdb, cfg.DefenderRateLimits, budget.RedisOptions{
		Prefix: prefix, Timeout: cfg.RedisTimeout, Lease: cfg.DefenderTimeout + leaseMargin,
		Reserve: cfg.DefenderReserve, Logger: a.log, Registerer: reg,
	})
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	a.redis = rdb
	a.log.Info("call budget shared in Redis", "redis", rdb.Options().Addr, "tls", rdb.Options().TLSConfig != nil, "keys", prefix+"*")
	return b, nil
}

// newSharedCache builds the level of the cache the replicas share in
// Redis, under the budget's keys, when ENRICHER_REDIS_URL is set; nil
// otherwise. The budget must be built first: it makes the client.
func (a *App) newSharedCache(cfg config.Config, deps Deps, ep defender.Endpoint, reg prometheus.Registerer) (*cache.Redis, error) {
	if a.redis == nil {
		return nil, nil
	}
	prefix := budget.RedisPrefix(getenv(deps)("AZURE_TENANT_ID"), ep.BaseURL.Host)
	shared, err := cache.NewRedis(a.redis, cache.RedisOptions{
		Prefix: prefix, Timeout: cfg.RedisTimeout, LockTTL: lockTTL(cfg.RedisTimeout), Logger: a.log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("cache shared in Redis", "keys", prefix+"alert:*", "lock_ttl", lockTTL(cfg.RedisTimeout).String())
	return shared, nil
}

// lockTTL is how long an alert's lock in Redis outlives its owner's last
// renewal (every third of it): long enough for a renewal to get through a
// slow Redis, short enough that the lookups of an alert whose replica died
// mid-call wait about as long as ENRICHER_MAX_ENRICH_WAIT lets them.
func lockTTL(redisTimeout time.Duration) time.Duration {
	return max(10*time.Second, 4*redisTimeout)
}

// newRedisClient translates ENRICHER_REDIS_URL and ENRICHER_REDIS_TIMEOUT
// into go-redis's options. roots nil means the system roots (SSL_CERT_FILE
// names another bundle).
func newRedisClient(cfg config.Config, roots *x509.CertPool) (*redis.Client, error) {
	opts, err := config.RedisOptions(cfg.RedisURL.Reveal())
	if err != nil {
		return nil, fmt.Errorf("%s (--redis-url): %w", config.Env("redis-url"), err)
	}
	// Every command is bounded by the timeout through its context, the
	// dial and a wait for a pooled connection included: a slow Redis must
	// never hold a partition.
	opts.ContextTimeoutEnabled = true
	opts.DialTimeout = cfg.RedisTimeout
	opts.ReadTimeout = cfg.RedisTimeout
	opts.WriteTimeout = cfg.RedisTimeout
	opts.PoolTimeout = cfg.RedisTimeout
	// A failed command is not retried behind the caller's back: the budget
	// fails closed at once and asks again on the next Acquire.
	opts.MaxRetries = -1
	opts.DialerRetries = 1
	opts.ClientName = "defender-enricher"
	if opts.TLSConfig != nil {
		// ParseURL sets the server name and TLS 1.2; the certificate is
		// always verified (config refuses skip_verify).
		opts.TLSConfig.RootCAs = roots
		opts.TLSConfig.InsecureSkipVerify = false
		opts.TLSConfig.MinVersion = max(opts.TLSConfig.MinVersion, tls.VersionTLS12)
	}
	return redis.NewClient(opts), nil
}

// closeRedis closes the Redis client, if any, once the budget is closed.
func (a *App) closeRedis() {
	if a.redis != nil {
		if err := a.redis.Close(); err != nil {
			a.log.Debug("closing the Redis client", "error", err)
		}
	}
}

// redisLogger is go-redis's logger: its lines at debug level.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), "source", "go-redis")
	}
}
