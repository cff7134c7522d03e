// Command defender-enricher consumes Microsoft Defender for Endpoint alerts
// from Kafka, enriches each with the user related to the alert, and
// publishes the result for the SIEM. Subcommands: run, demo, check, version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/defender-enricher/defender-enricher/app"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/demo"
)

// Set at build time: -ldflags "-X main.version=v1.0.0 -X main.commit=abc123".
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `defender-enricher enriches Microsoft Defender for Endpoint alerts on Kafka
with the user related to each alert.

Usage:
  defender-enricher run      [flags]   the connector (until SIGINT/SIGTERM)
  defender-enricher demo     [--events N] [--json]   the whole pipeline on an embedded broker and simulator
  defender-enricher check    [flags]   preflight: brokers, topics, token, one API call
  defender-enricher version

Every flag is also an ENRICHER_ variable; a flag wins. "defender-enricher run -h" lists them.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runConnector(ctx, args[1:], stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "defender-enricher %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown subcommand %q\n\n%s", args[0], usage)
	return 2
}

// load reads the configuration and prints one line naming a bad option.
func load(name string, args []string, stderr io.Writer) (config.Config, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfg, err := config.Load(fs, args, os.Getenv, stderr)
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stderr, "defender-enricher %s: %v\n", name, err)
		}
		return cfg, false
	}
	return cfg, true
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runConnector(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, ok := load("run", args, stderr)
	if !ok {
		return 2
	}
	if err := cfg.RequireBrokers(); err != nil {
		fmt.Fprintf(stderr, "defender-enricher run: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	a, err := app.New(cfg, app.Deps{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "defender-enricher run: %v\n", err)
		return 2
	}
	if err := a.Run(ctx); err != nil {
		log.Error("connector failed", "error", err)
		return 1
	}
	return 0
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, ok := load("check", args, stderr)
	if !ok {
		return 2
	}
	if err := cfg.RequireBrokers(); err != nil {
		fmt.Fprintf(stderr, "defender-enricher check: %v\n", err)
		return 2
	}
	if !app.Check(ctx, cfg, app.Deps{Logger: newLogger(cfg, stderr)}, stdout) {
		return 1
	}
	return 0
}

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	events := fs.Int("events", 300, "stop after this many events were published (output and dead letters)")
	rate := fs.Int("rate", 100, "alerts generated per second")
	verbose := fs.Bool("v", false, "show the connector's own logs")
	raw := fs.Bool("json", false, "print output records as they are on the topic")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *events < 1 || *rate < 1 {
		fmt.Fprintln(stderr, "defender-enricher demo: --events and --rate must be at least 1")
		return 2
	}
	logOut := io.Discard
	if *verbose {
		logOut = stderr
	}
	if err := demo.Run(ctx, demo.Options{Events: *events, Rate: *rate, Out: stdout, Log: logOut, JSON: *raw}); err != nil {
		fmt.Fprintf(stderr, "defender-enricher demo: %v\n", err)
		return 1
	}
	return 0
}
