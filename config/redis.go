package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// RedisOptions parses ENRICHER_REDIS_URL, redis://[user]:password@host:port/db
// or rediss:// for TLS, into go-redis options. Its errors never quote the
// password: the URL appears in them with its user info redacted.
//
// TLS is always verified, against the system roots (SSL_CERT_FILE names
// another bundle), so skip_verify is refused; the timeouts and retries come
// from ENRICHER_REDIS_TIMEOUT, so the URL may not set them.
func RedisOptions(raw string) (*redis.Options, error) {
	shown := redactRedisURL(raw)
	const want = "want redis://:PASSWORD@HOST:PORT/DB, or rediss:// for TLS (Azure Cache for Redis: rediss://:ACCESS_KEY@NAME.redis.cache.windows.net:6380/0)"
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes the whole URL, password included: not its text.
		return nil, fmt.Errorf("%q is not a URL: %s; percent-encode the password's '/', '#', '?' and '@' (%%2F, %%23, %%3F, %%40)", shown, want)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return nil, fmt.Errorf("%q: scheme %q: %s", shown, u.Scheme, want)
	}
	if u.Hostname() == "" || strings.Contains(u.Path, "@") {
		return nil, fmt.Errorf("%q has no host: %s; percent-encode the password's '/', '#', '?' and '@' (%%2F, %%23, %%3F, %%40)", shown, want)
	}
	q := u.Query()
	if q.Has("skip_verify") {
		return nil, fmt.Errorf("%q: skip_verify is not allowed: TLS is always verified; name a private CA's bundle in SSL_CERT_FILE", shown)
	}
	for _, name := range []string{"dial_timeout", "read_timeout", "write_timeout", "pool_timeout", "max_retries", "min_retry_backoff", "max_retry_backoff"} {
		if q.Has(name) {
			return nil, fmt.Errorf("%q: %s is not allowed: ENRICHER_REDIS_TIMEOUT bounds every command, and a failed one is never retried", shown, name)
		}
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%q: %s", shown, redisReason(err))
	}
	return opts, nil
}

// redactRedisURL is raw with everything between its scheme and its last
// "@" redacted. A password may hold a '/' that was not percent-encoded,
// which ends the authority where RedactUserinfo looks for the "@": here
// the whole string is searched.
func redactRedisURL(raw string) string {
	at := strings.LastIndex(raw, "@")
	if at < 0 {
		return raw
	}
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 && i < at {
		start = i + 3
	}
	return raw[:start] + redacted + raw[at:]
}

// redisReason is go-redis's parse error without its prefix; those errors
// name a parameter or the database number, never the user info.
func redisReason(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return "not a URL"
	}
	return strings.TrimPrefix(err.Error(), "redis: ")
}
