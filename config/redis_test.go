package config

import (
	"strings"
	"testing"
	"time"
)

// TestRedisURL: what ENRICHER_REDIS_URL accepts, what it refuses with one
// line naming the option, and that no error ever quotes the password.
func TestRedisURL(t *testing.T) {
	const password = "s3cr/t+Key=="
	tests := []struct {
		url     string
		addr    string
		db      int
		tls     bool
		user    string
		pass    string
		wantErr string // a part of the error; "" means valid
	}{
		{url: "redis://127.0.0.1:6379/0", addr: "127.0.0.1:6379"},
		{url: "redis://127.0.0.1:23000/3", addr: "127.0.0.1:23000", db: 3},
		{url: "redis://redis.internal", addr: "redis.internal:6379"},
		{url: "redis://:hunter2@redis.internal:6379/1", addr: "redis.internal:6379", db: 1, pass: "hunter2"},
		{url: "redis://enricher:hunter2@redis.internal:6379/0", addr: "redis.internal:6379", user: "enricher", pass: "hunter2"},
		{url: "rediss://:s3cr%2Ft+Key==@contoso.redis.cache.windows.net:6380/0", addr: "contoso.redis.cache.windows.net:6380", tls: true, pass: password},
		{url: "rediss://[::1]:6380", addr: "[::1]:6380", tls: true},
		{url: "rediss://:" + password + "@contoso.redis.cache.windows.net:6380/0", wantErr: "percent-encode"},
		{url: "http://:hunter2@redis.internal", wantErr: "scheme"},
		{url: "unix://:hunter2@/run/redis.sock", wantErr: "scheme"},
		{url: "redis.internal:6379", wantErr: "scheme"},
		{url: "redis://:hunter2@", wantErr: "no host"},
		{url: "redis://:hunter2@redis.internal:6379/zero", wantErr: "database"},
		{url: "redis://:hunter2@redis.internal:6379/0/1", wantErr: "path"},
		{url: "redis://:hunter2@redis.internal:port/0", wantErr: "not a URL"},
		{url: "rediss://:hunter2@redis.internal:6380/0?skip_verify=true", wantErr: "SSL_CERT_FILE"},
		{url: "redis://:hunter2@redis.internal:6379/0?read_timeout=5s", wantErr: "ENRICHER_REDIS_TIMEOUT"},
		{url: "redis://:hunter2@redis.internal:6379/0?max_retries=3", wantErr: "ENRICHER_REDIS_TIMEOUT"},
		{url: "redis://:hunter2@redis.internal:6379/0?colour=blue", wantErr: "unexpected option"},
		{url: "redis://:hunter2@redis.internal:6379/0?db=x", wantErr: "database"},
	}
	for _, tt := range tests {
		for _, from := range []struct {
			env  map[string]string
			args []string
			name string
		}{
			{env: map[string]string{"ENRICHER_REDIS_URL": tt.url}, name: "ENRICHER_REDIS_URL"},
			{args: []string{"--redis-url", tt.url}, name: "--redis-url"},
		} {
			c, err := load(t, from.env, from.args...)
			if tt.wantErr != "" {
				if err == nil {
					t.Errorf("%s: no error", tt.url)
					continue
				}
				msg := err.Error()
				if !strings.Contains(msg, from.name) || !strings.Contains(msg, tt.wantErr) || strings.Contains(msg, "\n") {
					t.Errorf("%s: error %q, want one line naming %s and saying %q", tt.url, msg, from.name, tt.wantErr)
				}
				for _, secret := range []string{"hunter2", password, "s3cr"} {
					if strings.Contains(msg, secret) {
						t.Errorf("%s: the error quotes the password: %q", tt.url, msg)
					}
				}
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", tt.url, err)
				continue
			}
			opts, err := RedisOptions(c.RedisURL.Reveal())
			if err != nil {
				t.Fatal(err)
			}
			if opts.Addr != tt.addr || opts.DB != tt.db || (opts.TLSConfig != nil) != tt.tls || opts.Username != tt.user || opts.Password != tt.pass {
				t.Errorf("%s: addr %q db %d tls %v user %q password %q; want %q %d %v %q %q",
					tt.url, opts.Addr, opts.DB, opts.TLSConfig != nil, opts.Username, opts.Password, tt.addr, tt.db, tt.tls, tt.user, tt.pass)
			}
			if tt.tls && (opts.TLSConfig.InsecureSkipVerify || opts.TLSConfig.ServerName == "") {
				t.Errorf("%s: TLS config %+v does not verify the server", tt.url, opts.TLSConfig)
			}
		}
	}
}

func TestRedisURLNeverPrints(t *testing.T) {
	c, err := load(t, map[string]string{"ENRICHER_REDIS_URL": "rediss://:hunter2@contoso.redis.cache.windows.net:6380/0"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range Describe() {
		if strings.Contains(r[1], "hunter2") {
			t.Fatalf("%s shown as %q", r[0], r[1])
		}
	}
	for _, s := range []string{c.RedisURL.String(), c.RedisURL.GoString()} {
		if strings.Contains(s, "hunter2") {
			t.Fatalf("the URL printed: %q", s)
		}
	}
}

func TestRedisAndStateDefaults(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL.IsSet() || c.RedisTimeout != 500*time.Millisecond || c.BudgetStateFile != "" {
		t.Fatalf("defaults: Redis URL set %v, timeout %v, state file %q", c.RedisURL.IsSet(), c.RedisTimeout, c.BudgetStateFile)
	}
	for _, bad := range []string{"5ms", "1m", "soon"} {
		if _, err := load(t, map[string]string{"ENRICHER_REDIS_TIMEOUT": bad}); err == nil || !strings.Contains(err.Error(), "ENRICHER_REDIS_TIMEOUT") {
			t.Errorf("ENRICHER_REDIS_TIMEOUT=%s: err = %v", bad, err)
		}
	}
	c, err = load(t, map[string]string{"ENRICHER_BUDGET_STATE_FILE": " /var/lib/defender-enricher/budget.state "})
	if err != nil || c.BudgetStateFile != "/var/lib/defender-enricher/budget.state" {
		t.Fatalf("state file %q, %v", c.BudgetStateFile, err)
	}
}
