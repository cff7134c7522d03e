package demo

import (
	"bytes"
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/defender-enricher/defender-enricher/schemas"
)

// formatSchema compiles the schema of a format from schemas.FS.
func formatSchema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	b, err := fs.ReadFile(schemas.FS, name)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(name, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The demo runs in every output format: the stream and the summary read
// the format, and every record it prints with --json is valid against
// the format's schema.
func TestDemoInEveryFormat(t *testing.T) {
	for _, tc := range []struct {
		format schemas.Format
		schema string
	}{
		{schemas.FormatECS, schemas.ECSSchema},
		{schemas.FormatOCSF, schemas.OCSFSchema},
	} {
		t.Run(string(tc.format), func(t *testing.T) {
			sch := formatSchema(t, tc.schema)
			for _, raw := range []bool{false, true} {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				var out bytes.Buffer
				err := Run(ctx, Options{Events: 150, Rate: 1000, Out: &out, JSON: raw, Format: tc.format, Outage: 0})
				cancel()
				if err != nil {
					t.Fatalf("%v\n%s", err, out.String())
				}
				text := out.String()
				if strings.Contains(text, "unreadable") {
					t.Errorf("the demo could not read its %s output:\n%s", tc.format, text)
				}
				if !raw {
					// Every event line starts with its status, read from
					// the format (the outcome of each lookup is not the
					// point here, and depends on the machine's speed).
					_, stream, _ := strings.Cut(text, "\n\n")
					stream, _, _ = strings.Cut(stream, "\nsummary after ")
					for line := range strings.Lines(stream) {
						if strings.HasPrefix(line, "--") || strings.HasPrefix(line, "dead letter") {
							continue
						}
						status, _, _ := strings.Cut(line, " ")
						if !slices.Contains([]string{"enriched", "not_found", "unavailable", "failed", "skipped"}, status) {
							t.Errorf("a %s event line without its status: %q", tc.format, line)
						}
					}
					continue
				}
				records := 0
				for line := range strings.Lines(text) {
					if !strings.HasPrefix(line, "{") {
						continue
					}
					records++
					v, err := jsonschema.UnmarshalJSON(strings.NewReader(line))
					if err != nil {
						t.Fatalf("%v: %s", err, line)
					}
					if err := sch.Validate(v); err != nil {
						t.Errorf("a %s record the schema refuses: %v\n%s", tc.format, err, line)
					}
				}
				if records == 0 {
					t.Errorf("no %s record printed:\n%s", tc.format, text)
				}
			}
		})
	}
}
