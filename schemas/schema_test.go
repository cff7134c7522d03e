package schemas_test

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/defender-enricher/defender-enricher/schemas"
)

var schemaFiles = []string{schemas.AlertSchema, schemas.StreamingEnvelopeSchema, schemas.OutputSchema, schemas.UserSchema}

// compileSchemas compiles every embedded schema, registered under its $id
// so that relative references between them resolve as they would for any
// consumer who downloads the files side by side.
func compileSchemas(t testing.TB) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range schemaFiles {
		b, err := fs.ReadFile(schemas.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		m, _ := doc.(map[string]any)
		if id, want := m["$id"], schemas.SchemaBaseURI+name; id != want {
			t.Fatalf("%s: $id = %v, want %s", name, id, want)
		}
		if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Fatalf("%s: $schema = %v", name, m["$schema"])
		}
		if err := c.AddResource(schemas.SchemaBaseURI+name, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	out := make(map[string]*jsonschema.Schema)
	for _, name := range schemaFiles {
		s, err := c.Compile(schemas.SchemaBaseURI + name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func validate(t testing.TB, s *jsonschema.Schema, doc []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		t.Fatalf("not JSON: %v: %s", err, doc)
	}
	return s.Validate(v)
}

func TestFSHoldsExactlyTheNamedSchemas(t *testing.T) {
	entries, err := fs.ReadDir(schemas.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != "alert.schema.json,ecs.v1.schema.json,ocsf-1.8.0-detection_finding.schema.json,output.v1.schema.json,streaming-envelope.schema.json,user.schema.json" {
		t.Errorf("FS holds %v", got)
	}
}

func TestOutputSchemaAcceptsEveryStatus(t *testing.T) {
	sch := compileSchemas(t)[schemas.OutputSchema]
	user := userWithoutOData(t)
	p := mustParser(t, schemas.ParserConfig{})
	inputs := [][]byte{readFile(t, "testdata/alert.json"), readFile(t, "testdata/streaming-envelope.json")}
	for _, in := range inputs {
		for _, ev := range p.Parse(in, nil) {
			for _, tc := range outputCases() {
				u := tc.user
				if u != nil {
					u = user
				}
				out := schemas.AppendOutput(nil, ev.AlertID, ev.Alert, u, tc.e, testOrigin)
				if err := validate(t, sch, out); err != nil {
					t.Errorf("%s: %v\n%s", tc.name, err, out)
				}
			}
		}
	}
}

func TestOutputSchemaRejects(t *testing.T) {
	sch := compileSchemas(t)[schemas.OutputSchema]
	good := string(schemas.AppendOutput(nil, goodID, []byte(`{"id":"`+goodID+`"}`), testUser,
		schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, testOrigin))
	if err := validate(t, sch, []byte(good)); err != nil {
		t.Fatalf("the base document fails: %v", err)
	}
	notFound := string(schemas.AppendOutput(nil, goodID, []byte(`{"id":"`+goodID+`"}`), nil,
		schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceAPI, EnrichedAt: testTime, Error: "404"}, testOrigin))
	if err := validate(t, sch, []byte(notFound)); err != nil {
		t.Fatalf("the base not_found document fails: %v", err)
	}
	tests := []struct {
		name, base, old, new string
	}{
		{"unknown status", good, `"status":"enriched"`, `"status":"done"`},
		{"user null when enriched", good, `"user":{"id":"contoso\\user1","accountName":"user1","logOnMachinesCount":1,"isDomainAdmin":false}`, `"user":null`},
		{"user set when not found", notFound, `"user":null`, `"user":{"accountName":"user1"}`},
		{"user with an OData annotation", good, `"user":{`, `"user":{"@odata.context":"https://api.securitycenter.microsoft.com/api/$metadata#Users/$entity",`},
		{"user with a wrong type", good, `"logOnMachinesCount":1`, `"logOnMachinesCount":"1"`},
		{"user not an object", good, `"user":{"id":"contoso\\user1","accountName":"user1","logOnMachinesCount":1,"isDomainAdmin":false}`, `"user":"user1"`},
		{"alert not an object", good, `"alert":{"id":"` + goodID + `"}`, `"alert":[]`},
		{"bad alert id", good, `"alertId":"` + goodID + `"`, `"alertId":"a/b"`},
		{"empty alert id", good, `"alertId":"` + goodID + `"`, `"alertId":""`},
		{"schema version 2", good, `"schemaVersion":1`, `"schemaVersion":2`},
		{"schema version missing", good, `"schemaVersion":1,`, ``},
		{"origin missing", good, `,"origin":{"topic":"defender.alerts","partition":3,"offset":42}`, ``},
		{"negative offset", good, `"offset":42`, `"offset":-1`},
		{"fractional partition", good, `"partition":3`, `"partition":3.5`},
		{"empty topic", good, `"topic":"defender.alerts"`, `"topic":""`},
		{"extra top-level field", good, `"schemaVersion":1,`, `"schemaVersion":1,"extra":true,`},
		{"extra enrichment field", good, `"error":""`, `"error":"","retries":3`},
		{"enrichedAt without milliseconds", good, `"enrichedAt":"2026-11-27T10:00:00.123Z"`, `"enrichedAt":"2026-11-27T10:00:00Z"`},
		{"enrichedAt not UTC", good, `"enrichedAt":"2026-11-27T10:00:00.123Z"`, `"enrichedAt":"2026-11-27T10:00:00.123+01:00"`},
		{"enrichedAt not a time", good, `"enrichedAt":"2026-11-27T10:00:00.123Z"`, `"enrichedAt":"2026-13-45T10:00:00.123Z"`},
		{"source missing when enriched", good, `"source":"api"`, `"source":""`},
		{"source unknown", good, `"source":"api"`, `"source":"db"`},
		{"source missing when not found", notFound, `"source":"api"`, `"source":""`},
		{"user_cache when not found", notFound, `"source":"api"`, `"source":"user_cache"`},
		{"error missing", good, `,"error":""`, ``},
	}
	for _, tt := range tests {
		doc := strings.Replace(tt.base, tt.old, tt.new, 1)
		if doc == tt.base {
			t.Fatalf("%s: replacement did not apply", tt.name)
		}
		if err := validate(t, sch, []byte(doc)); err == nil {
			t.Errorf("%s: schema accepts %s", tt.name, doc)
		}
	}

	for _, st := range []schemas.Status{schemas.StatusUnavailable, schemas.StatusFailed, schemas.StatusSkipped} {
		for _, src := range []schemas.Source{schemas.SourceAPI, schemas.SourceUserCache} {
			doc := schemas.AppendOutput(nil, goodID, []byte(`{}`), nil, schemas.Enrichment{Status: st, Source: src, EnrichedAt: testTime}, testOrigin)
			if err := validate(t, sch, doc); err == nil {
				t.Errorf("%s with source %s accepted: %s", st, src, doc)
			}
		}
	}
}

func userWithoutOData(t testing.TB) []byte {
	t.Helper()
	b := readFile(t, "testdata/user-response.json")
	i := bytes.Index(b, []byte(`"@odata.context"`))
	j := bytes.Index(b, []byte(`"id"`))
	if i < 0 || j < i {
		t.Fatal("unexpected user sample")
	}
	return append(append([]byte(nil), b[:i]...), b[j:]...)
}

func TestUserSchema(t *testing.T) {
	sch := compileSchemas(t)[schemas.UserSchema]
	if err := validate(t, sch, userWithoutOData(t)); err != nil {
		t.Errorf("documented user without annotations: %v", err)
	}
	valid := []string{
		`{}`,
		`{"id":null,"accountName":null,"accountDomain":null,"accountSid":null,"firstSeen":null,"lastSeen":null,"mostPrevalentMachineId":null,"leastPrevalentMachineId":null,"logonTypes":null,"logOnMachinesCount":null,"isDomainAdmin":null,"isOnlyNetworkUser":null}`,
		`{"accountName":"user1","newFieldFromTheAPI":{"x":1}}`,
		`{"odata":"not an annotation","logOnMachinesCount":0}`,
	}
	for _, doc := range valid {
		if err := validate(t, sch, []byte(doc)); err != nil {
			t.Errorf("%s: %v", doc, err)
		}
	}
	invalid := []string{
		string(readFile(t, "testdata/user-response.json")),
		`{"@odata.etag":"W/\"1\""}`,
		`{"accountName@odata.type":"#String","accountName":"user1"}`,
		`{"accountName":1}`,
		`{"isDomainAdmin":"false"}`,
		`{"logOnMachinesCount":1.5}`,
		`{"logOnMachinesCount":-1}`,
		`{"firstSeen":"yesterday"}`,
		`[]`,
		`null`,
	}
	for _, doc := range invalid {
		if err := validate(t, sch, []byte(doc)); err == nil {
			t.Errorf("accepted %.80s", doc)
		}
	}
	// The schema names each of the twelve documented fields.
	b, _ := fs.ReadFile(schemas.FS, schemas.UserSchema)
	for _, f := range []string{"id", "accountName", "accountDomain", "accountSid", "firstSeen", "lastSeen", "mostPrevalentMachineId",
		"leastPrevalentMachineId", "logonTypes", "logOnMachinesCount", "isDomainAdmin", "isOnlyNetworkUser"} {
		if !bytes.Contains(b, []byte(`"`+f+`": {`)) {
			t.Errorf("user schema lacks %s", f)
		}
	}
}

func TestAlertSchema(t *testing.T) {
	sch := compileSchemas(t)[schemas.AlertSchema]
	p := mustParser(t, schemas.ParserConfig{})
	docs := []struct {
		doc   string
		valid bool
	}{
		{string(readFile(t, "testdata/alert.json")), true},
		{`{"id":"` + goodID + `"}`, true},
		{`{"id":"da637308392288907382_-880718168","severity":"High","x":[1,2]}`, true},
		{`{"id":"` + strings.Repeat("a", 128) + `"}`, true},
		{`{}`, false},
		{`{"id":null}`, false},
		{`{"id":123}`, false},
		{`{"id":""}`, false},
		{`{"id":"a/b"}`, false},
		{`{"id":"../../machines"}`, false},
		{`{"id":"é"}`, false},
		{`{"id":"a\n"}`, false},
		{`{"id":"` + strings.Repeat("a", 129) + `"}`, false},
		{`[]`, false},
	}
	for _, d := range docs {
		err := validate(t, sch, []byte(d.doc))
		if (err == nil) != d.valid {
			t.Errorf("%.60s: valid = %v, want %v (%v)", d.doc, err == nil, d.valid, err)
		}
		// The schema and the parser agree on what is an alert.
		evs := p.Parse([]byte(d.doc), nil)
		if accepted := len(evs) == 1 && evs[0].Reject == ""; accepted != d.valid {
			t.Errorf("%.60s: parser accepts = %v, schema says %v", d.doc, accepted, d.valid)
		}
	}
}

func TestStreamingEnvelopeSchema(t *testing.T) {
	sch := compileSchemas(t)[schemas.StreamingEnvelopeSchema]
	docs := []struct {
		doc   string
		valid bool
	}{
		{string(readFile(t, "testdata/streaming-envelope.json")), true},
		{`{"records":[]}`, false},
		{`{"records":[` + strings.TrimSuffix(strings.Repeat(rec("a1", "")+",", 1001), ",") + `]}`, false},
		{`{"records":[` + rec("a1", "") + `,` + rec("a2", `null`) + `]}`, true},
		{`{}`, false},
		{`{"records":{}}`, false},
		{`{"records":[7]}`, false},
		{`{"records":[{}]}`, false},
		{`{"records":[{"properties":{}}]}`, false},
		{`{"records":[` + rec("a/b", "") + `]}`, false},
		{`{"records":[` + rec("a1", `42`) + `]}`, false},
	}
	for _, d := range docs {
		if err := validate(t, sch, []byte(d.doc)); (err == nil) != d.valid {
			t.Errorf("%.60s: valid = %v, want %v (%v)", d.doc, err == nil, d.valid, err)
		}
	}
}
