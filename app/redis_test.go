package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/cache"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/redistest"
)

func closeApp(t *testing.T, a *App) {
	t.Helper()
	t.Cleanup(func() {
		a.budget.Close()
		a.closeRedis()
		_ = a.consumer.Close(context.Background())
		_ = a.retries.Close(context.Background())
		_ = a.producer.Close(context.Background())
	})
}

// TestNewSharesTheBudgetInRedis: with ENRICHER_REDIS_URL set, New builds
// the shared budget, under the keys of the tenant and the API host, with
// its metrics on the app's registry.
func TestNewSharesTheBudgetInRedis(t *testing.T) {
	cfg, deps, sim, _ := checkConfig(t)
	cfg.HTTPAddr = ""
	s := redistest.NewMini(t)
	cfg.RedisURL = config.NewSecret(s.URL())
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	closeApp(t, a)
	if _, ok := a.budget.(*budget.Redis); !ok {
		t.Fatalf("budget is a %T, want *budget.Redis", a.budget)
	}
	done, err := a.budget.Acquire(budget.WithPriority(context.Background(), budget.PriorityHigh))
	if err != nil {
		t.Fatal(err)
	}
	done()
	u, err := url.Parse(sim.URL())
	if err != nil {
		t.Fatal(err)
	}
	want := budget.RedisPrefix(sim.TenantID(), u.Host) + "calls"
	if keys := s.Mini().Keys(); !contains(keys, want) {
		t.Fatalf("keys %v, want %s", keys, want)
	}
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "enricher_budget_store_up" {
			found = mf.GetMetric()[0].GetGauge().GetValue() == 1
		}
	}
	if !found {
		t.Fatal("enricher_budget_store_up is not 1 after a grant")
	}
}

// TestNewSharesTheCacheInRedis: with ENRICHER_REDIS_URL set, a lookup's
// answer is kept in Redis under the fleet's keys, where a second app (a
// second replica) finds it, with no call; without it, the cache is the
// process's own, and its metrics are those it always had.
func TestNewSharesTheCacheInRedis(t *testing.T) {
	cfg, deps, sim, _ := checkConfig(t)
	cfg.HTTPAddr = ""
	const alertID = "da637472900382838869_1364969609"
	lookup := func(a *App) cache.Result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // guards against a hang only
		defer cancel()
		r, err := a.cache.Lookup(budget.WithPriority(ctx, budget.PriorityHigh), alertID)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	metrics := func(a *App) map[string]bool {
		t.Helper()
		mfs, err := a.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, mf := range mfs {
			names[mf.GetName()] = true
		}
		return names
	}
	shared := []string{"enricher_cache_shared_hits_total", "enricher_cache_lock_waits_total", "enricher_cache_store_errors_total"}

	local, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	closeApp(t, local)
	for _, name := range shared {
		if metrics(local)[name] {
			t.Errorf("%s without ENRICHER_REDIS_URL", name)
		}
	}

	s := redistest.NewMini(t)
	cfg.RedisURL = config.NewSecret(s.URL())
	first, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	closeApp(t, first)
	if r := lookup(first); r.Cached {
		t.Fatalf("first replica: %+v, want a call", r)
	}
	u, err := url.Parse(sim.URL())
	if err != nil {
		t.Fatal(err)
	}
	want := budget.RedisPrefix(sim.TenantID(), u.Host) + "alert:" + alertID
	if keys := s.Mini().Keys(); !contains(keys, want) {
		t.Fatalf("keys %v, want %s", keys, want)
	}
	second, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	closeApp(t, second)
	calls := sim.CallCount()
	if r := lookup(second); !r.Cached {
		t.Fatalf("second replica: %+v, want the first one's answer", r)
	}
	if sim.CallCount() != calls {
		t.Errorf("the second replica called")
	}
	for _, name := range shared {
		if !metrics(second)[name] {
			t.Errorf("no %s with ENRICHER_REDIS_URL", name)
		}
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestNewKeepsTheBudgetInTheStateFile: without Redis, a budget built again
// on ENRICHER_BUDGET_STATE_FILE counts the calls of the one before.
func TestNewKeepsTheBudgetInTheStateFile(t *testing.T) {
	cfg, deps, _, _ := checkConfig(t)
	cfg.HTTPAddr = ""
	cfg.BudgetStateFile = filepath.Join(t.TempDir(), "budget.state")
	a, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		done, err := a.budget.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done()
	}
	a.budget.Close()
	b, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	closeApp(t, b)
	w, ok := b.budget.(*budget.Window)
	if !ok {
		t.Fatalf("budget is a %T, want *budget.Window", b.budget)
	}
	if got := w.Restored().Calls; got != 2 {
		t.Fatalf("restored %d calls, want 2", got)
	}
	_ = a.consumer.Close(context.Background())
	_ = a.retries.Close(context.Background())
	_ = a.producer.Close(context.Background())
}

func TestNewRefusesAStateFileItCannotUse(t *testing.T) {
	cfg, deps, _, _ := checkConfig(t)
	cfg.HTTPAddr = ""
	cfg.BudgetStateFile = filepath.Join(t.TempDir(), "missing", "budget.state")
	_, err := New(cfg, deps)
	if err == nil || !strings.Contains(err.Error(), "ENRICHER_BUDGET_STATE_FILE") || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want one naming ENRICHER_BUDGET_STATE_FILE and the file", err)
	}
}

// TestRedisClientVerifiesTLS: rediss:// verifies the server's certificate
// against the roots (the system's unless given), and the password reaches
// the server and nothing else.
func TestRedisClientVerifiesTLS(t *testing.T) {
	cert, roots := selfSigned(t)
	m := miniredis.NewMiniRedis()
	m.RequireAuth("hunter2")
	if err := m.StartAddrTLS("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}}); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := config.Default()
	cfg.RedisURL = config.NewSecret("rediss://:hunter2@" + m.Addr() + "/0")
	ping := func(roots *x509.CertPool) error {
		c, err := newRedisClient(cfg, roots)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return c.Ping(ctx).Err()
	}
	if err := ping(roots); err != nil {
		t.Fatalf("PING over TLS with the server's CA: %v", err)
	}
	err := ping(nil)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("PING over TLS against the system roots: %v, want a certificate error", err)
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("the error quotes the password: %v", err)
	}
	cfg.RedisURL = config.NewSecret("rediss://:wrong@" + m.Addr() + "/0")
	if err := ping(roots); err == nil || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("a wrong password: %v", err)
	}
}

// selfSigned returns a certificate for 127.0.0.1 and a pool holding it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// TestCheckAsksRedis: with ENRICHER_REDIS_URL set, check runs a script on
// Redis, and a Redis that does not answer fails that step, naming the
// option, without the password.
func TestCheckAsksRedis(t *testing.T) {
	cfg, deps, _, _ := checkConfig(t)
	s := redistest.NewMini(t)
	s.Mini().RequireAuth("hunter2")
	cfg.RedisURL = config.NewSecret("redis://:hunter2@" + s.Addr() + "/0")
	var out strings.Builder
	if !Check(context.Background(), cfg, deps, &out) || !strings.Contains(out.String(), "ok       Redis "+s.Addr()+" answers a script") {
		t.Fatalf("check with Redis:\n%s", out.String())
	}
	s.Mini().Close()
	out.Reset()
	if Check(context.Background(), cfg, deps, &out) {
		t.Fatalf("check passed with Redis closed:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "FAILED   Redis "+s.Addr()) || !strings.Contains(out.String(), "ENRICHER_REDIS_URL") || strings.Contains(out.String(), "hunter2") {
		t.Fatalf("check with Redis closed:\n%s", out.String())
	}
}
