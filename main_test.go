package main

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// runMain runs the program's entry with a clean ENRICHER_ environment.
func runMain(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	for _, k := range []string{"ENRICHER_KAFKA_BROKERS", "ENRICHER_CACHE_TTL", "ENRICHER_LOG_LEVEL"} {
		t.Setenv(k, env[k])
	}
	t.Setenv("ENRICHER_HTTP_ADDR", "127.0.0.1:0")
	var out, errOut bytes.Buffer
	// Bounded, should a broken option parser start the connector.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestBadOptionIsOneLine: a bad flag or variable is one line on stderr
// naming the option and what it takes, exit 2, nothing on stdout.
func TestBadOptionIsOneLine(t *testing.T) {
	brokers := map[string]string{"ENRICHER_KAFKA_BROKERS": "127.0.0.1:9"}
	tests := []struct {
		env  map[string]string
		args []string
		want []string
	}{
		{brokers, []string{"run", "--cache-ttl", "banana"}, []string{"--cache-ttl", "ENRICHER_CACHE_TTL", `"banana" is not a duration such as`}},
		{brokers, []string{"check", "--cache-ttl=banana"}, []string{"--cache-ttl", "ENRICHER_CACHE_TTL", "duration"}},
		{map[string]string{"ENRICHER_KAFKA_BROKERS": "127.0.0.1:9", "ENRICHER_CACHE_TTL": "banana"}, []string{"run"}, []string{"ENRICHER_CACHE_TTL", "--cache-ttl", "duration"}},
		{brokers, []string{"run", "--cache-size", "many"}, []string{"--cache-size", "ENRICHER_CACHE_SIZE", "whole number"}},
		{brokers, []string{"run", "--kafka-tls=maybe"}, []string{"--kafka-tls", "ENRICHER_KAFKA_TLS", "true or false"}},
		{brokers, []string{"run", "--log-level", "loud"}, []string{"--log-level", "ENRICHER_LOG_LEVEL", "debug"}},
		{brokers, []string{"run", "--no-such-flag"}, []string{"unknown flag --no-such-flag", "-h"}},
		{brokers, []string{"run", "--cache-ttl"}, []string{"--cache-ttl", "needs a value"}},
		{brokers, []string{"run", "stray"}, []string{`unexpected argument "stray"`}},
		{brokers, []string{"demo", "--events", "x"}, []string{"-events"}},
		{brokers, []string{"demo", "stray"}, []string{`unexpected argument "stray"`}},
	}
	for _, tt := range tests {
		code, stdout, stderr := runMain(t, tt.env, tt.args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2", tt.args, code)
		}
		if stdout != "" {
			t.Errorf("%v: stdout %q, want nothing", tt.args, stdout)
		}
		if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "defender-enricher "+tt.args[0]+": ") {
			t.Errorf("%v: stderr %q, want one line", tt.args, stderr)
		}
		for _, w := range tt.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q lacks %q", tt.args, stderr, w)
			}
		}
	}
	// A flag wins over a bad variable of the same option.
	if code, _, stderr := runMain(t, map[string]string{"ENRICHER_CACHE_TTL": "banana"}, "run", "--cache-ttl", "2h", "--kafka-brokers", "bad"); !strings.Contains(stderr, "ENRICHER_KAFKA_BROKERS") || code != 2 {
		t.Errorf("exit %d, stderr %q: want the brokers' error, the variable's overridden", code, stderr)
	}
}

// TestHelp: -h and --help print the usage to stdout and exit 0; each flag
// shows its value's type and a default that reads as one.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"run", "-h"}, {"run", "--help"}, {"check", "-h"}, {"demo", "-h"}, {"help"}, {"--help"}} {
		code, stdout, stderr := runMain(t, nil, args...)
		if code != 0 || stderr != "" || !strings.Contains(stdout, "Usage") {
			t.Errorf("%v: exit %d, stderr %q, stdout %q: want the usage on stdout, exit 0", args, code, stderr, stdout)
		}
	}
	_, stdout, _ := runMain(t, nil, "run", "-h")
	for _, want := range []string{
		"  --cache-ttl duration\n", "(ENRICHER_CACHE_TTL; default 1h)", "  --cache-size int\n", "  --kafka-brokers list\n",
		"  --kafka-tls[=bool]\n", "  --input-topic string\n", `(ENRICHER_INPUT_TOPIC; default "defender.alerts")`,
		"  --start-offset earliest|latest\n", "  --defender-rate-limits limits\n", `default "default"`, "default 5m)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("run -h lacks %q:\n%s", want, stdout)
		}
	}
	for _, bad := range []string{" value\n", "(default default)", "1h0m0s", "5m0s"} {
		if strings.Contains(stdout, bad) {
			t.Errorf("run -h has %q:\n%s", bad, stdout)
		}
	}
	_, stdout, _ = runMain(t, nil, "demo", "-h")
	if !strings.Contains(stdout, "  --events int\n") || strings.Contains(stdout, " value\n") {
		t.Errorf("demo -h:\n%s", stdout)
	}
}

func TestVersionLine(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var s []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			s = append(s, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return s
	}
	clone := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings(
		"vcs", "git", "vcs.revision", "5f7755c1a2b3c4d5e6f708192a3b4c5d6e7f8091", "vcs.time", "2026-11-29T21:31:06Z", "vcs.modified", "true")}
	installed := &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}
	tests := []struct {
		version, commit string
		info            *debug.BuildInfo
		want            string
	}{
		{"dev", "unknown", clone, "defender-enricher dev (commit 5f7755c1a2b3, 2026-11-29T21:31:06Z, modified tree, go"},
		{"dev", "unknown", installed, "defender-enricher v1.4.0 (commit unknown, go"},
		{"v2.0.0", "abc123", clone, "defender-enricher v2.0.0 (commit abc123, go"},
		{"dev", "unknown", nil, "defender-enricher dev (commit unknown, go"},
		{"dev", "unknown", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20261129213106-5f7755c1a2b3"}, Settings: settings(
			"vcs.revision", "5f7755c1a2b3c4d5", "vcs.modified", "false")}, "defender-enricher v0.0.0-20261129213106-5f7755c1a2b3 (commit 5f7755c1a2b3, go"},
	}
	for _, tt := range tests {
		if got := versionLine(tt.version, tt.commit, tt.info); !strings.HasPrefix(got, tt.want) || strings.Contains(got, "\n") {
			t.Errorf("versionLine(%q, %q, %+v) = %q, want it to start with %q", tt.version, tt.commit, tt.info, got, tt.want)
		}
	}
}
