package kafkatest

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// EnvSecurity names the environment variable holding the path of the file
// that scripts/kafka.sh start writes about the real broker's secured
// listeners (KAFKA_DIR/security.env). Unset, the file is looked for in the
// repository's .kafka folder, scripts/kafka.sh's default KAFKA_DIR.
const EnvSecurity = "ENRICHER_TEST_KAFKA_SECURITY"

// Security describes the real broker's secured listeners, each on its own
// port of the same broker as the plaintext one.
type Security struct {
	MTLSBrokers  []string // SSL, a client certificate required
	SCRAMBrokers []string // SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512
	OAuthBrokers []string // SASL_PLAINTEXT with OAUTHBEARER, unsecured JWTs
	// CAFile verifies the broker's certificate (for 127.0.0.1 and
	// localhost); CertFile and KeyFile are a client certificate it signed.
	CAFile, CertFile, KeyFile string
	// SCRAMUsername and SCRAMPassword are the SCRAM user's credentials.
	SCRAMUsername, SCRAMPassword string
}

// NewSecurity returns the secured listeners of the real broker named by
// ENRICHER_TEST_KAFKA_BROKERS, or skips the test as NewReal does when none
// is named. A named broker without the file fails the test: it was started
// by something else than scripts/kafka.sh start.
func NewSecurity(t testing.TB) Security {
	t.Helper()
	if strings.TrimSpace(os.Getenv(EnvBrokers)) == "" {
		t.Skip(skipReal)
	}
	path := os.Getenv(EnvSecurity)
	if path == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatalf("kafkatest: %s is not set and the repository root was not found: %v", EnvSecurity, err)
		}
		path = filepath.Join(root, ".kafka", "security.env")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("kafkatest: the secured listeners of %s are unknown (%v): start the broker with scripts/kafka.sh start, or set %s to its KAFKA_DIR/security.env",
			EnvBrokers, err, EnvSecurity)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			kv[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("kafkatest: reading %s: %v", path, err)
	}
	s := Security{
		MTLSBrokers: []string{kv["MTLS_BROKERS"]}, SCRAMBrokers: []string{kv["SCRAM_BROKERS"]}, OAuthBrokers: []string{kv["OAUTH_BROKERS"]},
		CAFile: kv["CA_FILE"], CertFile: kv["CLIENT_CERT_FILE"], KeyFile: kv["CLIENT_KEY_FILE"],
		SCRAMUsername: kv["SCRAM_USERNAME"], SCRAMPassword: kv["SCRAM_PASSWORD"],
	}
	for k, v := range map[string]string{"MTLS_BROKERS": s.MTLSBrokers[0], "SCRAM_BROKERS": s.SCRAMBrokers[0], "OAUTH_BROKERS": s.OAuthBrokers[0],
		"CA_FILE": s.CAFile, "CLIENT_CERT_FILE": s.CertFile, "CLIENT_KEY_FILE": s.KeyFile, "SCRAM_USERNAME": s.SCRAMUsername, "SCRAM_PASSWORD": s.SCRAMPassword} {
		if v == "" {
			t.Fatalf("kafkatest: %s has no %s: restart the broker with scripts/kafka.sh stop && scripts/kafka.sh start", path, k)
		}
	}
	return s
}

// repoRoot is the nearest folder above the working directory that holds
// go.mod of this module (tests run in their package's folder).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/defender-enricher/defender-enricher\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", os.ErrNotExist
		}
		dir = parent
	}
}
