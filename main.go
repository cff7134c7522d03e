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
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/defender-enricher/defender-enricher/app"
	"github.com/defender-enricher/defender-enricher/config"
	"github.com/defender-enricher/defender-enricher/demo"
	"github.com/defender-enricher/defender-enricher/schemas"
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
		return runConnector(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		info, _ := debug.ReadBuildInfo()
		fmt.Fprintln(stdout, versionLine(version, commit, info))
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "unknown subcommand %q\n\n%s", args[0], usage)
	return 2
}

// versionLine is what the version subcommand prints. What -ldflags did not
// set comes from the build information: the module's version (go install
// module@version; go build stamps a pseudo-version from the VCS), and the
// VCS revision, time and whether the tree was modified (go build in a
// clone).
func versionLine(version, commit string, info *debug.BuildInfo) string {
	var details []string
	if info != nil {
		if v := info.Main.Version; version == "dev" && v != "" && v != "(devel)" {
			version = v
		}
		if commit == "unknown" {
			vcs := map[string]string{}
			for _, s := range info.Settings {
				vcs[s.Key] = s.Value
			}
			if r := vcs["vcs.revision"]; r != "" {
				commit = r[:min(len(r), 12)]
				if t := vcs["vcs.time"]; t != "" {
					details = append(details, t)
				}
				if vcs["vcs.modified"] == "true" {
					details = append(details, "modified tree")
				}
			}
		}
	}
	details = append([]string{"commit " + commit}, details...)
	details = append(details, runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH)
	return "defender-enricher " + version + " (" + strings.Join(details, ", ") + ")"
}

// subcommandUsage is the -h text of run and check.
func subcommandUsage(w io.Writer, fs *flag.FlagSet, what string) func() {
	return func() {
		fmt.Fprintf(w, "Usage: defender-enricher %s [flags]\n\n%s\n\n", fs.Name(), what)
		fmt.Fprintln(w, "Every flag is also an ENRICHER_ variable (named in each entry); a flag wins over its variable.")
		fmt.Fprintln(w)
		config.PrintFlags(w, fs)
	}
}

// load reads the configuration. Help goes to stdout (exit 0), a bad option
// is one line on stderr (exit 2); ok means go on.
func load(name, what string, args []string, stdout, stderr io.Writer) (cfg config.Config, code int, ok bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = subcommandUsage(stdout, fs, what)
	cfg, err := config.Load(fs, args, os.Getenv, stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return cfg, 0, false
	case err != nil:
		fmt.Fprintf(stderr, "defender-enricher %s: %v\n", name, err)
		return cfg, 2, false
	}
	return cfg, 0, true
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

func runConnector(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, code, ok := load("run", "The connector: consumes alerts, enriches them, publishes them, until SIGINT or SIGTERM.", args, stdout, stderr)
	if !ok {
		return code
	}
	if err := cfg.RequireBrokers(); err != nil {
		fmt.Fprintf(stderr, "defender-enricher run: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)
	// Every option as the connector runs with it, secrets redacted: the
	// first thing to read when it does not do what was meant.
	log.Info("configuration", "config", cfg)
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
	cfg, code, ok := load("check", "Preflight: brokers reachable, topics present, token obtained, one API call authorised.\nOne verdict per step; exit 1 if any step failed.", args, stdout, stderr)
	if !ok {
		return code
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
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	events := fs.Int("events", 600, "stop after exactly this many events were published (output and dead letters)")
	rate := fs.Int("rate", 100, "alerts generated per second")
	verbose := fs.Bool("v", false, "show the connector's own logs")
	raw := fs.Bool("json", false, "print output records as they are on the topic")
	format := fs.String("format", string(schemas.FormatEnvelope), "output format: "+formatList()+" (ENRICHER_OUTPUT_FORMAT)")
	outage := fs.Duration("outage", 500*time.Millisecond, "Defender answers 503 for this long, a sixth of the way through: alerts go out unavailable, then come again as updates (0: no outage)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, "Usage: defender-enricher demo [flags]\n\nThe whole pipeline on an embedded Kafka broker and an Entra ID + Defender simulator, with\na generator of realistic alerts; prints each published event, then a summary.\n\n")
			config.PrintFlags(stdout, fs)
			return 0
		}
		fmt.Fprintf(stderr, "defender-enricher demo: %v\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "defender-enricher demo: unexpected argument %q (-h lists the flags)\n", fs.Arg(0))
		return 2
	}
	if !slices.Contains(schemas.Formats, schemas.Format(*format)) {
		fmt.Fprintf(stderr, "defender-enricher demo: --format %q: want one of %s\n", *format, formatList())
		return 2
	}
	if *events < 1 || *rate < 1 || *outage < 0 {
		fmt.Fprintln(stderr, "defender-enricher demo: --events and --rate must be at least 1, --outage at least 0")
		return 2
	}
	logOut := io.Discard
	if *verbose {
		logOut = stderr
	}
	if err := demo.Run(ctx, demo.Options{Events: *events, Rate: *rate, Out: stdout, Log: logOut, JSON: *raw, Outage: *outage, Format: schemas.Format(*format)}); err != nil {
		fmt.Fprintf(stderr, "defender-enricher demo: %v\n", err)
		return 1
	}
	return 0
}

// formatList is the output formats, comma-separated.
func formatList() string {
	names := make([]string, len(schemas.Formats))
	for i, f := range schemas.Formats {
		names[i] = string(f)
	}
	return strings.Join(names, ", ")
}
