// Package config holds the connector's options: one plain struct, its
// defaults, a loader that reads flags and ENRICHER_ variables (a flag wins
// over its variable), and a Validate that does no I/O and names the bad
// option in one line.
package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"

	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/defender-enricher/defender-enricher/budget"
	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// Policy is what happens to an alert that cannot be enriched in time.
type Policy string

// The policies of ENRICHER_ON_UNAVAILABLE.
const (
	// Passthrough publishes the alert without its user, status unavailable
	// or failed, once ENRICHER_MAX_ENRICH_WAIT has passed.
	Passthrough Policy = "passthrough"
	// Wait holds the alert until the API answers (found or not found).
	Wait Policy = "wait"
)

// StartOffset is where a group with no committed offset starts.
type StartOffset string

// The values of ENRICHER_START_OFFSET.
const (
	Earliest StartOffset = "earliest"
	Latest   StartOffset = "latest"
)

// SASLMechanism names a Kafka SASL mechanism.
type SASLMechanism string

// The values of ENRICHER_KAFKA_SASL_MECHANISM.
const (
	SASLNone        SASLMechanism = ""
	SASLPlain       SASLMechanism = "plain"
	SASLScramSHA256 SASLMechanism = "scram-sha-256"
	SASLScramSHA512 SASLMechanism = "scram-sha-512"
	// SASLOAuthBearer authenticates with an Entra ID token of the Azure
	// credential (ENRICHER_AZURE_CREDENTIAL), as Azure Event Hubs' Kafka
	// endpoint takes it.
	SASLOAuthBearer SASLMechanism = "oauthbearer"
)

// Config is every option of the connector.
type Config struct {
	KafkaBrokers       []string
	KafkaTLS           bool
	KafkaTLSCAFile     string // PEM roots that verify the brokers, instead of the system's
	KafkaTLSCertFile   string // PEM client certificate (chain) for mutual TLS
	KafkaTLSKeyFile    string // PEM key of KafkaTLSCertFile
	KafkaTLSServerName string // name verified in the brokers' certificates; default each broker's host
	KafkaSASLMechanism SASLMechanism
	KafkaOAuthScope    string // scope of the OAUTHBEARER token; default https://<first broker's host>/.default
	KafkaSASLUsername  string
	KafkaSASLPassword  Secret
	KafkaCompression   string
	InputTopic         string
	OutputTopic        string
	DLQTopic           string
	RetryTopic         string
	RetryMaxAge        time.Duration
	ConsumerGroup      string
	StartOffset        StartOffset
	CommitInterval     time.Duration
	SessionTimeout     time.Duration
	MaxMessageBytes    int
	MaxInFlight        int
	MaxInFlightBytes   int
	MaxRecords         int
	AlertIDPointer     string
	OutputFormat       schemas.Format

	DefenderAPIURL        string
	DefenderScope         string
	DefenderRateLimits    budget.Limits
	DefenderReserve       float64 // fraction of every budget window kept for High and Medium alerts
	DefenderTimeout       time.Duration
	AzureCredential       defender.CredentialKind
	AzureDisableDiscovery bool

	CacheSize        int
	CacheTTL         time.Duration
	NegativeCacheTTL time.Duration
	ReuseUser        bool
	BreakerFailures  int
	BreakerTimeout   time.Duration

	OnUnavailable   Policy
	MaxEnrichWait   time.Duration
	ShutdownTimeout time.Duration

	RedisURL        Secret // redis:// or rediss://, password included; unset: each process its own budget and cache
	RedisTimeout    time.Duration
	BudgetStateFile string

	HTTPAddr           string
	HealthStallTimeout time.Duration // /healthz fails after the fetch loop or the committer is stuck this long
	Pprof              bool
	LogLevel           string
	LogFormat          string
}

// Default returns the configuration with every default set.
func Default() Config {
	limits, _ := budget.ParseLimits(budget.DefaultLimits)
	return Config{
		InputTopic:         "defender.alerts",
		OutputTopic:        "defender.alerts.enriched",
		DLQTopic:           "defender.alerts.dlq",
		RetryTopic:         "defender.alerts.retry",
		RetryMaxAge:        24 * time.Hour,
		ConsumerGroup:      "defender-enricher",
		StartOffset:        Earliest,
		CommitInterval:     time.Second,
		SessionTimeout:     30 * time.Second,
		KafkaCompression:   "none",
		MaxMessageBytes:    1_000_000,
		MaxInFlight:        5000,
		MaxInFlightBytes:   32 << 20,
		MaxRecords:         1000,
		AlertIDPointer:     "/id",
		OutputFormat:       schemas.FormatEnvelope,
		DefenderAPIURL:     defender.DefaultAPIURL,
		DefenderRateLimits: limits,
		DefenderReserve:    0.2,
		DefenderTimeout:    15 * time.Second,
		AzureCredential:    defender.CredentialDefault,
		CacheSize:          20_000,
		CacheTTL:           time.Hour,
		NegativeCacheTTL:   5 * time.Minute,
		ReuseUser:          true,
		BreakerFailures:    5,
		BreakerTimeout:     30 * time.Second,
		OnUnavailable:      Passthrough,
		MaxEnrichWait:      10 * time.Second,
		ShutdownTimeout:    20 * time.Second,
		RedisTimeout:       500 * time.Millisecond,
		HTTPAddr:           ":8080",
		HealthStallTimeout: time.Minute,
		LogLevel:           "info",
		LogFormat:          "json",
	}
}

// option binds one field to its flag and variable.
type option struct {
	name  string // flag name; the variable is ENRICHER_ + upper snake case
	usage string
	value flag.Value
}

// Env returns the variable of a flag name: kafka-brokers → ENRICHER_KAFKA_BROKERS.
func Env(flagName string) string {
	return "ENRICHER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (c *Config) options() []option {
	return []option{
		{"kafka-brokers", "comma-separated bootstrap brokers (required by run)", listValue{&c.KafkaBrokers}},
		{"kafka-tls", "connect to Kafka over TLS, verified against the system roots (SSL_CERT_FILE names another bundle)", boolValue{&c.KafkaTLS}},
		{"kafka-tls-ca-file", "PEM file of the roots that verify the brokers' certificates, instead of the system's (needs ENRICHER_KAFKA_TLS)", stringValue{&c.KafkaTLSCAFile}},
		{"kafka-tls-cert-file", "PEM file of the client certificate for mutual TLS, with ENRICHER_KAFKA_TLS_KEY_FILE (needs ENRICHER_KAFKA_TLS)", stringValue{&c.KafkaTLSCertFile}},
		{"kafka-tls-key-file", "PEM file of the client certificate's private key", stringValue{&c.KafkaTLSKeyFile}},
		{"kafka-tls-server-name", "name verified in the brokers' certificates (empty: each broker's host)", stringValue{&c.KafkaTLSServerName}},
		{"kafka-sasl-mechanism", "SASL mechanism: plain, scram-sha-256, scram-sha-512, oauthbearer (an Entra ID token of ENRICHER_AZURE_CREDENTIAL, for Azure Event Hubs) (empty: none)", enumValue[SASLMechanism]{&c.KafkaSASLMechanism, []SASLMechanism{SASLNone, SASLPlain, SASLScramSHA256, SASLScramSHA512, SASLOAuthBearer}}},
		{"kafka-oauth-scope", "scope of the oauthbearer token (empty: https://HOST/.default of the first broker, which is Event Hubs' namespace scope)", stringValue{&c.KafkaOAuthScope}},
		{"kafka-sasl-username", "SASL user name", stringValue{&c.KafkaSASLUsername}},
		{"kafka-sasl-password", "SASL password (prefer the variable to the flag: flags show in ps)", secretValue{&c.KafkaSASLPassword}},
		{"kafka-compression", "codec of the batches written to the output, retry and dead-letter topics: none, gzip, snappy, lz4, zstd (consumers decompress whatever the input holds)", enumValue[string]{&c.KafkaCompression, []string{"none", "gzip", "snappy", "lz4", "zstd"}}},
		{"input-topic", "topic of alert events", stringValue{&c.InputTopic}},
		{"output-topic", "topic of enriched events", stringValue{&c.OutputTopic}},
		{"dlq-topic", "dead-letter topic for input that cannot be processed", stringValue{&c.DLQTopic}},
		{"retry-topic", "topic where events published unavailable are kept until they are enriched and published again as updates", stringValue{&c.RetryTopic}},
		{"retry-max-age", "a deferred event older than this is given up: counted and logged, no update", durationValue{&c.RetryMaxAge}},
		{"consumer-group", "Kafka consumer group; the retry topic is consumed in this group with \".retry\" appended", stringValue{&c.ConsumerGroup}},
		{"start-offset", "where a group with no committed offset starts: earliest or latest", enumValue[StartOffset]{&c.StartOffset, []StartOffset{Earliest, Latest}}},
		{"commit-interval", "how often acknowledged offsets are committed", durationValue{&c.CommitInterval}},
		{"kafka-session-timeout", "how long the group waits for a member that stopped (a killed process) before its partitions move", durationValue{&c.SessionTimeout}},
		{"max-message-bytes", "largest input message processed and largest record written; larger go to the DLQ as too_large", intValue{&c.MaxMessageBytes}},
		{"max-in-flight", "events fetched but not yet acknowledged; fetching pauses at this many", intValue{&c.MaxInFlight}},
		{"max-in-flight-bytes", "bytes of input messages fetched but not yet acknowledged; fetching pauses at this many; their outputs take about as much again", intValue{&c.MaxInFlightBytes}},
		{"max-records", "most records of one streaming-API envelope; a larger envelope is one dead letter, too_many_records", intValue{&c.MaxRecords}},
		{"output-format", "shape of the output topic's records: envelope (the v1 envelope), ocsf (OCSF 1.8 Detection Finding), ecs (Elastic Common Schema 8.x); dead letters and the retry topic are the same in every format", enumValue[schemas.Format]{&c.OutputFormat, schemas.Formats}},
		{"alert-id-pointer", "JSON pointer to the alert id in plain JSON objects", stringValue{&c.AlertIDPointer}},
		{"defender-api-url", "Defender API base URL (geo hosts and government clouds too)", stringValue{&c.DefenderAPIURL}},
		{"defender-scope", "OAuth scope of the token (default: derived from the API URL's cloud)", stringValue{&c.DefenderScope}},
		{"defender-rate-limits", "client-side call budget, CALLS/WINDOW pairs that all hold at once; retries count", limitsValue{&c.DefenderRateLimits}},
		{"defender-reserve", "share of every window of the call budget that only High and Medium alerts may use: N% from 0% to 90%, or a fraction such as 0.2", reserveValue{&c.DefenderReserve}},
		{"defender-timeout", "longest one API call may take", durationValue{&c.DefenderTimeout}},
		{"azure-credential", "default, client-secret, client-certificate, workload-identity, managed-identity, azure-cli", enumValue[defender.CredentialKind]{&c.AzureCredential, defender.CredentialKinds}},
		{"azure-disable-instance-discovery", "trust the authority host as given (private or simulated authorities)", boolValue{&c.AzureDisableDiscovery}},
		{"cache-size", "most alert ids whose answer is kept", intValue{&c.CacheSize}},
		{"cache-ttl", "how long a found user is kept", durationValue{&c.CacheTTL}},
		{"negative-cache-ttl", "how long a 404 answer is kept", durationValue{&c.NegativeCacheTTL}},
		{"reuse-user", "answer an alert that names exactly one user from a found user that is exactly that one (same SID, or same domain\\name), without a call", boolValue{&c.ReuseUser}},
		{"breaker-failures", "consecutive API failures that open the circuit breaker", intValue{&c.BreakerFailures}},
		{"breaker-timeout", "longest the breaker stays open before a probe: the open time starts at 1s and doubles while probes fail, up to this", durationValue{&c.BreakerTimeout}},
		{"on-unavailable", "passthrough: publish without the user when the API cannot answer in time; wait: hold until it can", enumValue[Policy]{&c.OnUnavailable, []Policy{Passthrough, Wait}}},
		{"max-enrich-wait", "longest an event waits for its lookup (call budget, Retry-After pause, slow answer) before passthrough; an open breaker passes it through at once", durationValue{&c.MaxEnrichWait}},
		{"shutdown-timeout", "on SIGTERM, the bound on draining (half of it), flushing and the last commit; events not done by then are consumed again", durationValue{&c.ShutdownTimeout}},
		{"redis-url", "Redis shared by every replica for the call budget, Retry-After and the cache, redis://:PASSWORD@HOST:PORT/DB or rediss:// for TLS (prefer the variable to the flag: flags show in ps; empty: each process its own budget)", secretValue{&c.RedisURL}},
		{"redis-timeout", "longest one Redis command may take; without an answer no call is made", durationValue{&c.RedisTimeout}},
		{"budget-state-file", "file where a process without Redis keeps its recent calls, so that a restart does not reset its budget (empty: none)", stringValue{&c.BudgetStateFile}},
		{"http-addr", "address of /metrics, /healthz and /readyz (empty: off)", stringValue{&c.HTTPAddr}},
		{"health-stall-timeout", "/healthz fails once the fetch loop or the committer has been stuck this long in the process's own work (waiting on the broker, on Defender or for room is never a stall)", durationValue{&c.HealthStallTimeout}},
		{"pprof", "serve Go's runtime profiles under /debug/pprof/ on the HTTP address (CPU, heap, allocations, goroutines; off by default)", boolValue{&c.Pprof}},
		{"log-level", "debug, info, warn or error", enumValue[string]{&c.LogLevel, []string{"debug", "info", "warn", "error"}}},
		{"log-format", "json or text", enumValue[string]{&c.LogFormat, []string{"json", "text"}}},
	}
}

// Load builds a Config from defaults, then ENRICHER_ variables (getenv),
// then flags (args), and validates it. fs may carry extra flags of the
// subcommand; Load adds the options to it and parses args with it.
//
// Errors are one line that names the option as flag and variable. When
// args ask for help (-h, --help), Load writes the usage to out (fs.Usage
// if set, else a heading and PrintFlags) and returns flag.ErrHelp. It
// writes nothing else to out, and nothing on an error.
func Load(fs *flag.FlagSet, args []string, getenv func(string) string, out io.Writer) (Config, error) {
	c := Default()
	opts := c.options()
	var setErr error // the first option whose flag value did not parse
	for _, o := range opts {
		fs.Var(trackedValue{o.value, o.name, &setErr}, o.name, o.usage)
	}
	// A bad variable counts only if no flag sets its option.
	var envErr error
	envName := ""
	for _, o := range opts {
		v := getenv(Env(o.name))
		if _, secret := o.value.(secretValue); secret {
			fv, err := secretFile(o.name, v, getenv(Env(o.name)+"_FILE"))
			if err != nil {
				return c, err
			}
			v = cmp.Or(fv, v)
		}
		if v != "" {
			if err := o.value.Set(v); err != nil && envErr == nil {
				envErr, envName = fmt.Errorf("%s (--%s): %v", Env(o.name), o.name, err), o.name
			}
		}
	}
	usage := fs.Usage
	fs.Usage = func() {} // Load reports errors itself, in one line
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		} else {
			fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
			PrintFlags(out, fs)
		}
		return c, flag.ErrHelp
	case setErr != nil:
		return c, setErr
	case err != nil:
		return c, parseError(err)
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected argument %q: every option is a --flag or an ENRICHER_ variable (-h lists them)", fs.Arg(0))
	}
	if envErr != nil {
		overridden := false
		fs.Visit(func(f *flag.Flag) { overridden = overridden || f.Name == envName })
		if !overridden {
			return c, envErr
		}
	}
	return c, c.Validate()
}

// parseError rewords the flag package's own errors: an unknown flag and a
// flag without its value.
func parseError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Errorf("unknown flag --%s (-h lists them)", strings.TrimPrefix(name, "-"))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		name = strings.TrimPrefix(name, "-")
		return fmt.Errorf("--%s (%s) needs a value", name, Env(name))
	}
	return err
}

// trackedValue is an option's flag.Value that words its parse error as one
// line naming the option, and keeps the first such error: the flag package
// would wrap it in its own words.
type trackedValue struct {
	flag.Value
	name  string
	first *error
}

func (v trackedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil {
		err = fmt.Errorf("--%s (%s): %v", v.name, Env(v.name), err)
		if *v.first == nil {
			*v.first = err
		}
	}
	return err
}

func (v trackedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func (v trackedValue) typeName() string {
	if t, ok := v.Value.(interface{ typeName() string }); ok {
		return t.typeName()
	}
	return ""
}

// PrintFlags writes the flags of fs to w, one entry per flag: the flag with
// the type of its value (duration, int, list, ...; a bool flag is a switch,
// --name or --name=false), then its usage, its variable and its default,
// for options. Flags that are not options, such as the demo's, are
// printed the same way without a variable.
func PrintFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		if t, ok := f.Value.(interface{ typeName() string }); ok {
			typ = t.typeName()
		}
		isBool := false
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			isBool = true
		}
		var head string
		switch {
		case isBool:
			head = "  --" + f.Name + "[=bool]"
		case typ == "":
			head = "  --" + f.Name
		default:
			head = "  --" + f.Name + " " + typ
		}
		var notes []string
		if _, option := f.Value.(trackedValue); option {
			notes = append(notes, Env(f.Name))
		}
		if d := defaultText(f, typ, isBool); d != "" {
			notes = append(notes, "default "+d)
		}
		if len(notes) > 0 {
			usage += " (" + strings.Join(notes, "; ") + ")"
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", head, strings.ReplaceAll(usage, "\n", "\n    \t"))
	})
}

// defaultText is the default worth showing, or "": none for an empty
// value, a false switch or a zero number; strings quoted, so that the
// credential kind "default" reads as a value.
func defaultText(f *flag.Flag, typ string, isBool bool) string {
	d := f.DefValue
	switch {
	case d == "", isBool && d == "false", d == "0" && typ == "int":
		return ""
	case typ == "string" || strings.Contains(typ, "|"):
		return strconv.Quote(d)
	}
	return d
}

// Validate checks every option without I/O and returns one line naming the
// first bad one.
func (c *Config) Validate() error {
	bad := func(name, format string, a ...any) error {
		return fmt.Errorf("%s (--%s): %s", Env(name), name, fmt.Sprintf(format, a...))
	}
	for _, b := range c.KafkaBrokers {
		if RedactUserinfo(b) != b {
			return bad("kafka-brokers", "%q is not host:port: credentials go in ENRICHER_KAFKA_SASL_USERNAME and ENRICHER_KAFKA_SASL_PASSWORD", RedactUserinfo(b))
		}
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			return bad("kafka-brokers", "%q is not host:port", b)
		}
	}
	topics := []struct{ name, topic string }{
		{"input-topic", c.InputTopic}, {"output-topic", c.OutputTopic}, {"dlq-topic", c.DLQTopic}, {"retry-topic", c.RetryTopic},
	}
	for _, t := range topics {
		if err := validTopic(t.topic); err != nil {
			return bad(t.name, "%v", err)
		}
	}
	if c.InputTopic == c.OutputTopic || c.InputTopic == c.DLQTopic {
		return bad("input-topic", "%q is also the output or dead-letter topic: the connector would consume its own output", c.InputTopic)
	}
	// The retry topic is consumed: it must hold nothing but deferred events.
	if c.RetryTopic == c.InputTopic || c.RetryTopic == c.OutputTopic || c.RetryTopic == c.DLQTopic {
		return bad("retry-topic", "%q is also the input, output or dead-letter topic: it must be a topic of its own, holding only deferred events", c.RetryTopic)
	}
	if c.ConsumerGroup == "" {
		return bad("consumer-group", "must not be empty")
	}
	if err := c.validateKafkaSecurity(bad); err != nil {
		return err
	}
	checks := []struct {
		name string
		ok   bool
		want string
	}{
		{"commit-interval", c.CommitInterval >= 10*time.Millisecond, "at least 10ms"},
		{"kafka-session-timeout", c.SessionTimeout >= time.Second && c.SessionTimeout <= 30*time.Minute, "from 1s to 30m (the broker also bounds it)"},
		{"max-message-bytes", c.MaxMessageBytes >= 1024 && c.MaxMessageBytes <= 100<<20, "from 1024 to 104857600"},
		{"max-in-flight", c.MaxInFlight >= 1 && c.MaxInFlight <= 1_000_000, "from 1 to 1000000"},
		{"max-in-flight-bytes", c.MaxInFlightBytes >= c.MaxMessageBytes && c.MaxInFlightBytes <= 64<<30, "at least ENRICHER_MAX_MESSAGE_BYTES and at most 68719476736"},
		{"max-records", c.MaxRecords >= 1 && c.MaxRecords <= 1_000_000, "from 1 to 1000000"},
		{"defender-timeout", c.DefenderTimeout >= 100*time.Millisecond, "at least 100ms"},
		{"cache-size", c.CacheSize >= 1, "at least 1"},
		{"cache-ttl", c.CacheTTL >= time.Second, "at least 1s"},
		{"negative-cache-ttl", c.NegativeCacheTTL >= time.Second, "at least 1s"},
		{"breaker-failures", c.BreakerFailures >= 1, "at least 1"},
		{"breaker-timeout", c.BreakerTimeout >= 100*time.Millisecond, "at least 100ms"},
		{"max-enrich-wait", c.MaxEnrichWait >= 10*time.Millisecond, "at least 10ms"},
		{"retry-max-age", c.RetryMaxAge >= time.Minute, "at least 1m"},
		{"shutdown-timeout", c.ShutdownTimeout >= 100*time.Millisecond, "at least 100ms"},
		{"health-stall-timeout", c.HealthStallTimeout >= 15*time.Second, "at least 15s: a commit, which the committer does as its own work, may take 10s"},
		{"redis-timeout", c.RedisTimeout >= 10*time.Millisecond && c.RedisTimeout <= 30*time.Second, "from 10ms to 30s"},
		{"defender-rate-limits", len(c.DefenderRateLimits) > 0, "at least one CALLS/WINDOW pair such as 100/1m"},
		{"defender-reserve", c.DefenderReserve >= 0 && c.DefenderReserve <= 0.9, "from 0% to 90%, such as 20% (a number without % is a fraction: 0.2)"},
	}
	for _, ch := range checks {
		if !ch.ok {
			return bad(ch.name, "must be %s", ch.want)
		}
	}
	if c.AlertIDPointer != "" && !strings.HasPrefix(c.AlertIDPointer, "/") {
		return bad("alert-id-pointer", "%q is not a JSON pointer: it starts with / such as /id or /data/alertId", c.AlertIDPointer)
	}
	// Checked before ResolveEndpoint, whose messages quote the URL whole.
	if RedactUserinfo(c.DefenderAPIURL) != c.DefenderAPIURL {
		return bad("defender-api-url", "%q must have no user info: the API takes the bearer token only", RedactUserinfo(c.DefenderAPIURL))
	}
	if _, err := defender.ResolveEndpoint(c.DefenderAPIURL, c.DefenderScope, ""); err != nil {
		return err
	}
	if c.RedisURL.IsSet() {
		if _, err := RedisOptions(c.RedisURL.Reveal()); err != nil {
			return bad("redis-url", "%v", err)
		}
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return bad("http-addr", "%q is not [host]:port", RedactUserinfo(c.HTTPAddr))
		}
	}
	return nil
}

// RedactUserinfo returns s with the user info of its authority (what comes
// before an "@" in "scheme://user:password@host/..." or "user:password@host:port")
// replaced by [redacted], for error messages that quote an address. It
// works on text that is not a valid URL too; s without user info comes
// back unchanged.
func RedactUserinfo(s string) string {
	start := 0
	if i := strings.Index(s, "://"); i >= 0 {
		start = i + 3
	}
	end := len(s)
	if i := strings.IndexAny(s[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at := strings.LastIndex(s[start:end], "@")
	if at < 0 {
		return s
	}
	return s[:start] + redacted + s[start+at:]
}

// RequireBrokers is the run subcommand's extra check.
func (c *Config) RequireBrokers() error {
	if len(c.KafkaBrokers) == 0 {
		return fmt.Errorf("%s (--kafka-brokers) is required: the comma-separated bootstrap brokers, such as kafka-1:9092,kafka-2:9092", Env("kafka-brokers"))
	}
	return nil
}

func validTopic(t string) error {
	if t == "" {
		return errors.New("must not be empty")
	}
	if len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("%q is not a valid Kafka topic name", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q is not a valid Kafka topic name (letters, digits, '.', '_', '-')", t)
		}
	}
	return nil
}

// Names lists every flag name, sorted, for documentation tests.
func Names() []string {
	c := Default()
	var names []string
	for _, o := range c.options() {
		names = append(names, o.name)
	}
	sort.Strings(names)
	return names
}

// Describe returns each option's variable, default and usage in order, for
// the README's table and --help.
func Describe() [][3]string {
	c := Default()
	var rows [][3]string
	for _, o := range c.options() {
		rows = append(rows, [3]string{Env(o.name), o.value.String(), o.usage})
	}
	return rows
}

type stringValue struct{ p *string }

func (v stringValue) String() string {
	if v.p == nil {
		return ""
	}
	return *v.p
}
func (v stringValue) Set(s string) error { *v.p = strings.TrimSpace(s); return nil }
func (stringValue) typeName() string     { return "string" }

type secretValue struct{ p *Secret }

func (v secretValue) String() string     { return "" }
func (v secretValue) Set(s string) error { *v.p = NewSecret(s); return nil }
func (secretValue) typeName() string     { return "string" }

type boolValue struct{ p *bool }

func (v boolValue) String() string {
	if v.p == nil {
		return "false"
	}
	return strconv.FormatBool(*v.p)
}
func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*v.p = b
	return nil
}
func (v boolValue) IsBoolFlag() bool { return true }
func (boolValue) typeName() string   { return "bool" }

type intValue struct{ p *int }

func (intValue) typeName() string { return "int" }

func (v intValue) String() string {
	if v.p == nil {
		return "0"
	}
	return strconv.Itoa(*v.p)
}
func (v intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(s), "_", ""))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", s)
	}
	*v.p = n
	return nil
}

type durationValue struct{ p *time.Duration }

func (v durationValue) String() string {
	if v.p == nil {
		return "0s"
	}
	return shortDuration(*v.p)
}
func (durationValue) typeName() string { return "duration" }

// shortDuration is d as it would be written: 1h, 5m, 1h30m, 1.5s, not
// 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
func (v durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as 10s, 5m or 1h", s)
	}
	*v.p = d
	return nil
}

type listValue struct{ p *[]string }

func (listValue) typeName() string { return "list" }

func (v listValue) String() string {
	if v.p == nil {
		return ""
	}
	return strings.Join(*v.p, ",")
}
func (v listValue) Set(s string) error {
	*v.p = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*v.p = append(*v.p, part)
		}
	}
	return nil
}

type limitsValue struct{ p *budget.Limits }

func (limitsValue) typeName() string { return "limits" }

func (v limitsValue) String() string {
	if v.p == nil {
		return ""
	}
	return v.p.String()
}
func (v limitsValue) Set(s string) error {
	l, err := budget.ParseLimits(s)
	if err != nil {
		return err
	}
	*v.p = l
	return nil
}

// reserveValue is a share written N% (20%) or as a fraction (0.2).
type reserveValue struct{ p *float64 }

func (reserveValue) typeName() string { return "percent" }

func (v reserveValue) String() string {
	if v.p == nil {
		return "0%"
	}
	// Rounded to a hundredth of a percent: 7% is 0.07, whose product with
	// 100 is not exactly 7.
	return strconv.FormatFloat(math.Round(*v.p*1e4)/1e2, 'f', -1, 64) + "%"
}

func (v reserveValue) Set(s string) error {
	num, percent := strings.CutSuffix(strings.TrimSpace(s), "%")
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%q is not a share such as 20%% or 0.2", s)
	}
	if percent {
		f /= 100
	}
	*v.p = f
	return nil
}

type enumValue[T ~string] struct {
	p       *T
	allowed []T
}

func (v enumValue[T]) String() string {
	if v.p == nil {
		return ""
	}
	return string(*v.p)
}

// typeName lists the values when they are few and short.
func (v enumValue[T]) typeName() string {
	var names []string
	for _, a := range v.allowed {
		if a != "" {
			names = append(names, string(a))
		}
	}
	if t := strings.Join(names, "|"); len(t) <= 40 {
		return t
	}
	return "string"
}

func (v enumValue[T]) Set(s string) error {
	s = strings.ToLower(strings.TrimSpace(s))
	for _, a := range v.allowed {
		if string(a) == s {
			*v.p = a
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %v", s, v.allowed)
}
