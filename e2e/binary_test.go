package e2e

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/kafkatest"
)

// The built binary's run subcommand, configured by its environment alone,
// processes a stream; SIGTERM makes it exit 0 within the shutdown timeout
// with everything committed; kill -9 in the middle of a stream and a
// restart lose nothing.
func TestBinaryRun(t *testing.T) {
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		const shutdownTimeout = 10 * time.Second
		e := newEnv(t, c, 4)
		tl := newTail(t, e)
		vars := binaryVars(e, map[string]string{"ENRICHER_SHUTDOWN_TIMEOUT": shutdownTimeout.String()})
		ids := newAlertIDs(100)

		// A stream, then SIGTERM once it is all out.
		first := startBinary(t, vars, "run")
		hdr := withHeaders(kafkatest.Header{Key: "producer", Value: []byte("e2e")})
		inputs := produceStream(t, c, e.in, 500, 50, 20*time.Millisecond, nil, withIDs(ids...), hdr)
		m := newMarker()
		inputs = append(inputs, produce(t, c, e.in, message{Key: []byte("bad"), Value: []byte(`{"id":"a/b","e2eMarker":"` + m + `"}`),
			Partition: 2, Events: []event{{Marker: m, Record: -1}}})...)
		outs, dls := tl.waitCovered(60*time.Second, inputs)
		took := first.Stop(shutdownTimeout + 2*time.Second)
		t.Logf("SIGTERM: exited 0 after %v", took)
		if took > shutdownTimeout {
			t.Errorf("shutdown took %v, longer than ENRICHER_SHUTDOWN_TIMEOUT %v", took, shutdownTimeout)
		}
		if !strings.Contains(first.Stderr(), "connector stopped") {
			t.Errorf("no \"connector stopped\" line in the binary's log:\n%s", tailLines(first.Stderr(), 20))
		}
		checkCommitted(t, e, inputs)
		r := verifyNoLoss(t, inputs, outs, dls)
		if r.Duplicates != 0 {
			t.Errorf("%d duplicates without any failure", r.Duplicates)
		}
		got := byMarker(outs)
		for _, ev := range inputs[:len(inputs)-1] {
			checkEnvelope(t, e, got[ev.Marker], ev, "enriched")
		}

		// kill -9 in the middle of a stream, then a restart in the same
		// group: nothing is lost.
		second := startBinary(t, vars, "run")
		var third *proc
		more := produceStream(t, c, e.in, 3000, 100, 20*time.Millisecond, func(written int) {
			if third == nil && written >= 1200 {
				second.Kill()
				t.Logf("SIGKILL after %d of 3000 events written", written)
				third = startBinary(t, vars, "run")
			}
		}, withIDs(ids...), hdr)
		inputs = append(inputs, more...)
		outs, dls = tl.waitCovered(120*time.Second, inputs)
		took = third.Stop(shutdownTimeout + 2*time.Second)
		t.Logf("SIGTERM after the restart: exited 0 after %v", took)
		checkCommitted(t, e, inputs)
		r = verifyNoLoss(t, inputs, outs, dls)
		t.Logf("kill -9 and restart: %d duplicates among %d events", r.Duplicates, len(more))
		checkCalls(t, e.sim, ids...)
	})
}

// The binary's other subcommands and its configuration errors. They touch
// no external Kafka (demo embeds its own broker), so they run once, not
// per cluster kind.
func TestBinaryCommands(t *testing.T) {
	t.Run("version", func(t *testing.T) {
		p := startBinary(t, map[string]string{}, "version")
		if code := p.wait(30 * time.Second); code != 0 {
			t.Fatalf("version exited %d: %s", code, p.Stderr())
		}
		out := strings.TrimSpace(p.Stdout())
		if !strings.HasPrefix(out, "defender-enricher "+binVersion+" ") || !strings.Contains(out, "go1.") || strings.Contains(out, "\n") {
			t.Errorf("version printed %q, want one line with %s and the Go version", out, binVersion)
		}
	})

	t.Run("bad option", func(t *testing.T) {
		for _, tc := range []struct {
			vars map[string]string
			args []string
			name string
		}{
			{map[string]string{"ENRICHER_KAFKA_BROKERS": "127.0.0.1:9", "ENRICHER_CACHE_TTL": "banana"}, nil, "ENRICHER_CACHE_TTL"},
			{map[string]string{"ENRICHER_KAFKA_BROKERS": "127.0.0.1:9"}, []string{"--cache-ttl", "0s"}, "ENRICHER_CACHE_TTL"},
			{map[string]string{"ENRICHER_KAFKA_BROKERS": "127.0.0.1:9", "ENRICHER_MAX_ENRICH_WAIT": "-1s"}, nil, "ENRICHER_MAX_ENRICH_WAIT"},
			{map[string]string{}, nil, "ENRICHER_KAFKA_BROKERS"},
			{map[string]string{"ENRICHER_KAFKA_BROKERS": "127.0.0.1:9"}, []string{"--cache-ttl", "banana"}, "--cache-ttl (ENRICHER_CACHE_TTL)"},
		} {
			p := startBinary(t, tc.vars, append([]string{"run"}, tc.args...)...)
			code := p.wait(30 * time.Second)
			stderr := strings.TrimSpace(p.Stderr())
			if code != 2 {
				t.Errorf("%v %v: exit %d, want 2", tc.vars, tc.args, code)
			}
			if !strings.Contains(stderr, tc.name) || strings.Contains(stderr, "\n") {
				t.Errorf("%v %v: stderr %q, want one line naming %s", tc.vars, tc.args, stderr, tc.name)
			}
		}
	})

	t.Run("help", func(t *testing.T) {
		for _, args := range [][]string{{"run", "-h"}, {"check", "--help"}, {"demo", "-h"}} {
			p := startBinary(t, map[string]string{}, args...)
			if code := p.wait(30 * time.Second); code != 0 || p.Stderr() != "" || !strings.HasPrefix(p.Stdout(), "Usage: defender-enricher "+args[0]) {
				t.Errorf("%v: exit %d, stderr %q, stdout %q: want the usage on stdout, exit 0", args, code, p.Stderr(), tailLines(p.Stdout(), 5))
			}
		}
	})

	t.Run("demo", func(t *testing.T) {
		p := startBinary(t, map[string]string{}, "demo", "--events", "50")
		if code := p.wait(2 * time.Minute); code != 0 {
			t.Fatalf("demo exited %d:\n%s", code, tailLines(p.Stderr(), 20))
		}
		out := p.Stdout()
		for _, want := range []string{"summary after", "enriched", "events/s"} {
			if !strings.Contains(out, want) {
				t.Errorf("demo output has no %q:\n%s", want, tailLines(out, 30))
			}
		}
	})
}

// A binary built from a git checkout without -ldflags names its commit
// from the build information, not "commit unknown".
func TestBinaryVersionFromCheckout(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("no git to make a checkout with")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The module's files, working tree as it is, in a fresh repository of
	// one commit: what a clone is to the go command.
	files, err := exec.Command(git, "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Skipf("module root is not a git checkout: %v", err)
	}
	dir := t.TempDir()
	for _, f := range strings.Split(strings.TrimRight(string(files), "\x00"), "\x00") {
		data, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitIn := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(git, append([]string{"-c", "user.name=e2e", "-c", "user.email=e2e@example.invalid", "-c", "commit.gpgsign=false"}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	gitIn("init", "-q")
	gitIn("add", "-A")
	gitIn("commit", "-q", "--no-verify", "-m", "checkout")
	rev := gitIn("rev-parse", "HEAD")

	bin := filepath.Join(t.TempDir(), "defender-enricher")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// -buildvcs=auto is go build's default; said here so that a GOFLAGS of
	// the machine cannot turn it off.
	build := exec.CommandContext(ctx, "go", "build", "-buildvcs=auto", "-o", bin, ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("version: %v", err)
	}
	line := strings.TrimSpace(string(out))
	if !strings.Contains(line, "(commit "+rev[:12]+", ") || strings.Contains(line, "unknown") || strings.Contains(line, "modified") {
		t.Errorf("version printed %q, want commit %s of the unmodified checkout", line, rev[:12])
	}
}
