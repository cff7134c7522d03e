package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binVersion is stamped into the test build, so that the version test can
// tell the binary it built from any other.
const binVersion = "v0.0.0-e2e"

var (
	binDir   string // made by TestMain, removed after the run
	binOnce  sync.Once
	binPath  string
	binError error
)

func TestMain(m *testing.M) {
	if code := runChild(); code >= 0 {
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "defender-enricher-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary builds the connector from the module root, once per test
// run, and returns its path.
func buildBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			binError = err
			return
		}
		binPath = filepath.Join(binDir, "defender-enricher")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binPath,
			"-ldflags", "-X main.version="+binVersion+" -X main.commit=e2e", ".")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binError = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binError != nil {
		t.Fatalf("building the connector: %v", binError)
	}
	return binPath
}

// moduleRoot asks the go command where go.mod is.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the module")
	}
	return filepath.Dir(gomod), nil
}

// proc is one run of the built binary.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error // Wait's, set before done is closed
}

// syncBuffer is a bytes.Buffer safe for the writer goroutine of exec and
// the test reading it at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startBinary starts the built binary with args and exactly the given
// environment (nothing is inherited, so no stray AZURE_ variable of the
// machine can change what it does). A binary still running at cleanup is
// killed; its output is logged if the test failed.
func startBinary(t testing.TB, vars map[string]string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(buildBinary(t), args...)
	cmd.Env = []string{}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{t: t, cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %v: %v", args, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("binary %v (pid %d) stderr:\n%s", args, cmd.Process.Pid, tailLines(p.stderr.String(), 60))
		}
	})
	return p
}

// binaryVars is the env's configuration for the binary: the base
// variables, overrides, and SSL_CERT_FILE naming the simulator's CA so
// that the binary's TLS verification, left on, trusts the simulator.
func binaryVars(e *env, overrides map[string]string) map[string]string {
	v := e.vars(overrides)
	v["SSL_CERT_FILE"] = e.caCertFile()
	return v
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test if the process is still running then.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("binary %v still running after %v", p.cmd.Args[1:], timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	}
	p.t.Fatalf("binary %v: %v", p.cmd.Args[1:], p.err)
	return -1
}

// Kill sends SIGKILL, as a crash or an OOM kill would, and waits for the
// process to be gone.
func (p *proc) Kill() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second): // only a hang: the kernel does not wait
		p.t.Fatal("binary survived SIGKILL for 60s")
	}
}

// Stop sends SIGTERM and waits up to timeout for the process to exit,
// failing the test unless it exits 0 in time. It returns how long the
// shutdown took.
func (p *proc) Stop(timeout time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	if code := p.wait(timeout); code != 0 {
		p.t.Fatalf("binary exited %d after SIGTERM, want 0; stderr:\n%s", code, tailLines(p.stderr.String(), 40))
	}
	return time.Since(start)
}

// Stderr returns what the process wrote to stderr so far.
func (p *proc) Stderr() string { return p.stderr.String() }

// Stdout returns what the process wrote to stdout so far.
func (p *proc) Stdout() string { return p.stdout.String() }

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
