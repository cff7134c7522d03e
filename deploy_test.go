package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd unit is one systemd accepts (systemd-analyze verify, with the
// program's path pointed at a program that exists here), and keeps the
// promises the README makes of it: a start limit, no restart after a bad
// option, secrets through LoadCredential= only.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("deploy", "defender-enricher.service"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{
		"StartLimitIntervalSec=", "StartLimitBurst=", "Restart=on-failure", "RestartPreventExitStatus=2",
		"LoadCredential=", "ENRICHER_KAFKA_SASL_PASSWORD_FILE=%d/", "TimeoutStopSec=30",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the unit has no %q", want)
		}
	}
	for _, secret := range []string{"AZURE_CLIENT_SECRET=", "ENRICHER_KAFKA_SASL_PASSWORD=", "ENRICHER_REDIS_URL="} {
		if strings.Contains(text, secret) {
			t.Errorf("the unit sets %s: secrets go through LoadCredential=", strings.TrimSuffix(secret, "="))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the unit's syntax is not verified")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "defender-enricher.service")
	verified := strings.ReplaceAll(text, "/usr/local/bin/defender-enricher", "/bin/true")
	if err := os.WriteFile(path, []byte(verified), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
