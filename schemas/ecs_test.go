package schemas_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/defender-enricher/defender-enricher/schemas"
)

// The -update flag rewrites the golden files instead of comparing with
// them. It is defined in init, after every package-level variable, and
// only if no other test file of the package defines it, so that golden
// tests of several formats can share it.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite the golden files")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

const ecsSchemaFile = "ecs.v1.schema.json"

var ecsPrevious = time.Date(2026, 11, 27, 9, 50, 0, 456_000_000, time.UTC)

// ecsRansomwareAlert is an alert object as the demo's generator makes
// them, with a threat family, a sub-technique and a host name in capitals.
const ecsRansomwareAlert = `{"id":"638725836082216748_-1344635608","incidentId":176634,"investigationId":null,` +
	`"assignedTo":null,"severity":"High","status":"New","classification":null,"determination":null,` +
	`"investigationState":"Queued","detectionSource":"WindowsDefenderAtp","category":"Ransomware",` +
	`"threatFamilyName":"Akira","title":"Ransomware behavior detected in the file system",` +
	`"description":"A process was observed doing something that looks like Ransomware.",` +
	`"alertCreationTime":"2026-11-29T21:31:06.562397547Z","firstEventTime":"2026-11-29T21:30:06.562397547Z",` +
	`"lastEventTime":"2026-11-29T21:31:06.562397547Z","lastUpdateTime":"2026-11-29T21:32:06.562397547Z",` +
	`"machineId":"b45c4a40309b6bc5f878dbe6c15254f5cd818660","computerDnsName":"WS-8801.Contoso.local",` +
	`"rbacGroupName":"Workstations","aadTenantId":"8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d",` +
	`"relatedUser":{"userName":"jonas61","domainName":"NORTHWIND"},"mitreTechniques":["T1486","T1059.001","T1059"],` +
	`"comments":[],"evidence":[]}`

const ecsRansomwareUser = `{"accountDomain":"northwind","accountName":"jonas61",` +
	`"accountSid":"S-1-5-21-3418539524-1496149344-567949748-86813","firstSeen":"2020-11-07T06:58:09Z",` +
	`"id":"northwind\\jonas61","isDomainAdmin":false,"isOnlyNetworkUser":false,"lastSeen":"2021-09-16T08:39:00Z",` +
	`"leastPrevalentMachineId":"b45c4a40309b6bc5f878dbe6c15254f5cd818660","logOnMachinesCount":1,` +
	`"logonTypes":"Interactive","mostPrevalentMachineId":"b45c4a40309b6bc5f878dbe6c15254f5cd818660"}`

// ecsInput is one event as the connector reads it.
type ecsInput struct {
	name   string
	id     string
	alert  []byte
	record bool
	user   []byte
}

// ecsInputs are the events of the repository's sample inputs, split by
// the connector's parser: the alert object, the AlertInfo and
// AlertEvidence records and the record of another Defender service of
// the streaming envelope, and a ransomware alert.
func ecsInputs(t testing.TB) []ecsInput {
	t.Helper()
	p := mustParser(t, schemas.ParserConfig{})
	user := userWithoutOData(t)
	one := p.Parse(readFile(t, "testdata/alert.json"), nil)
	env := p.Parse(readFile(t, "testdata/streaming-envelope.json"), nil)
	ransom := p.Parse([]byte(ecsRansomwareAlert), nil)
	if len(one) != 1 || len(env) != 3 || len(ransom) != 1 || !env[2].Skip {
		t.Fatalf("unexpected samples: %d, %d, %d events", len(one), len(env), len(ransom))
	}
	for _, ev := range append(append(one, env...), ransom...) {
		if ev.Reject != "" {
			t.Fatalf("sample rejected: %s", ev.Detail)
		}
	}
	return []ecsInput{
		{"alert", one[0].AlertID, one[0].Alert, false, user},
		{"alertinfo", env[0].AlertID, env[0].Alert, true, user},
		{"alertevidence", env[1].AlertID, env[1].Alert, true, user},
		{"alertinfo-office365", env[2].AlertID, env[2].Alert, true, user},
		{"ransomware", ransom[0].AlertID, ransom[0].Alert, false, []byte(ecsRansomwareUser)},
	}
}

// ecsStatus is an enrichment as the pipeline makes it, with the update
// when it is one.
type ecsStatus struct {
	name   string
	e      schemas.Enrichment
	update *schemas.Update
}

func ecsStatuses() []ecsStatus {
	return []ecsStatus{
		{"enriched", schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, nil},
		{"enriched-cache", schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceCache, EnrichedAt: testTime}, nil},
		{"enriched-user_cache", schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceUserCache, EnrichedAt: testTime}, nil},
		{"not_found", schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceAPI, EnrichedAt: testTime,
			Error: "alert or user not found (HTTP 404)"}, nil},
		{"not_found-cache", schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceCache, EnrichedAt: testTime,
			Error: "alert or user not found (cached HTTP 404)"}, nil},
		{"unavailable", schemas.Enrichment{Status: schemas.StatusUnavailable, EnrichedAt: testTime,
			Error: "defender: unavailable: circuit breaker open after repeated failures of the Defender API: no call for 732ms more (open for 1s)"}, nil},
		{"failed", schemas.Enrichment{Status: schemas.StatusFailed, EnrichedAt: testTime,
			Error: "defender: GET /api/alerts/{id}/user answered 403 Forbidden: \"Forbidden\"\n"}, nil},
		{"skipped", schemas.Enrichment{Status: schemas.StatusSkipped, EnrichedAt: testTime}, nil},
		{"update", schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime},
			&schemas.Update{PreviousStatus: schemas.StatusUnavailable, PreviousEnrichedAt: ecsPrevious}},
		{"update-not_found", schemas.Enrichment{Status: schemas.StatusNotFound, Source: schemas.SourceAPI, EnrichedAt: testTime,
			Error: "alert or user not found (HTTP 404)"}, &schemas.Update{PreviousStatus: schemas.StatusUnavailable, PreviousEnrichedAt: ecsPrevious}},
		{"update-failed", schemas.Enrichment{Status: schemas.StatusFailed, EnrichedAt: testTime, Error: "defender: HTTP 503 after 4 attempts"},
			&schemas.Update{PreviousStatus: schemas.StatusUnavailable, PreviousEnrichedAt: ecsPrevious}},
	}
}

func ecsStatusNamed(t testing.TB, name string) ecsStatus {
	for _, s := range ecsStatuses() {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("no status %s", name)
	return ecsStatus{}
}

func ecsOutput(in ecsInput, s ecsStatus) *schemas.Output {
	return &schemas.Output{AlertID: in.id, Alert: in.alert, Record: in.record, User: in.user,
		Enrichment: s.e, Origin: testOrigin, Update: s.update}
}

// ecsGolden is a golden file: its name in testdata/ecs and its event.
type ecsGolden struct {
	file string
	o    *schemas.Output
}

// ecsGoldens are the golden documents: every status and an update for
// the alert object and the AlertInfo and AlertEvidence records, the
// record of another Defender service as skipped, and the ransomware alert
// enriched.
func ecsGoldens(t testing.TB) []ecsGolden {
	ins := ecsInputs(t)
	var out []ecsGolden
	for _, in := range ins[:3] {
		for _, st := range []string{"enriched", "not_found", "unavailable", "failed", "skipped", "update"} {
			out = append(out, ecsGolden{in.name + "-" + st + ".json", ecsOutput(in, ecsStatusNamed(t, st))})
		}
	}
	out = append(out,
		ecsGolden{"alertinfo-office365-skipped.json", ecsOutput(ins[3], ecsStatusNamed(t, "skipped"))},
		ecsGolden{"ransomware-enriched.json", ecsOutput(ins[4], ecsStatusNamed(t, "enriched"))},
	)
	return out
}

func compact(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("not JSON: %v: %s", err, b)
	}
	return buf.Bytes()
}

// TestAppendECSGolden compares each document with its golden file in
// testdata/ecs, in compact form; -update rewrites them, indented.
func TestAppendECSGolden(t *testing.T) {
	for _, g := range ecsGoldens(t) {
		path := filepath.Join("testdata", "ecs", g.file)
		got := schemas.AppendECS(nil, g.o)
		if !json.Valid(got) {
			t.Fatalf("%s: not JSON: %s", g.file, got)
		}
		if updateGolden() {
			var buf bytes.Buffer
			if err := json.Indent(&buf, got, "", "  "); err != nil {
				t.Fatal(err)
			}
			buf.WriteByte('\n')
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want := readFile(t, path)
		if !bytes.Equal(compact(t, got), compact(t, want)) {
			t.Errorf("%s: got\n%s\nwant\n%s", g.file, compact(t, got), compact(t, want))
		}
	}
}

func TestECSGoldenFilesAreAllCases(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "ecs"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for _, g := range ecsGoldens(t) {
		want = append(want, g.file)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("testdata/ecs holds %v, want %v", got, want)
	}
}

func compileECSSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	b, err := fs.ReadFile(schemas.FS, ecsSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := doc.(map[string]any)
	if id, want := m["$id"], schemas.SchemaBaseURI+ecsSchemaFile; id != want {
		t.Fatalf("$id = %v, want %s", id, want)
	}
	if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("$schema = %v", m["$schema"])
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(schemas.SchemaBaseURI+ecsSchemaFile, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(schemas.SchemaBaseURI + ecsSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ecsVariants are alerts beyond the samples: sparse, odd and wrongly
// typed ones, and ones with the fields the samples lack.
var ecsVariants = []struct {
	name   string
	alert  string
	record bool
}{
	{"empty object", `{}`, false},
	{"empty record", `{}`, true},
	{"no alert", ``, false},
	{"id only", `{"id":"` + goodID + `"}`, false},
	{"record without properties", `{"time":"2024-03-12T10:15:43Z"}`, true},
	{"properties not an object", `{"properties":[1,2]}`, true},
	{"wrong types", `{"title":5,"severity":["High"],"category":{},"mitreTechniques":"T1059","machineId":1,` +
		`"computerDnsName":null,"alertCreationTime":12,"firstEventTime":"not a time","aadTenantId":true}`, false},
	{"record wrong types", `{"time":5,"tenantId":[],"properties":{"Title":1,"Severity":null,"AttackTechniques":["T1059",7,"T1059"],` +
		`"Categories":7,"LocalIP":"not an ip","DeviceName":{}}}`, true},
	{"with link, IPv6 and offset times", `{"id":"a1","title":"t","alertWebUrl":"https://security.microsoft.com/alerts/a1",` +
		`"alertCreationTime":"2026-01-02T03:04:05.5+02:00","firstEventTime":"2026-01-02T03:04:05+02:00",` +
		`"lastEventTime":"2026-01-02T03:04:06-01:30","severity":"informational","category":"UnwantedSoftware"}`, false},
	{"evidence with an IP", `{"time":"2024-03-12T10:15:43Z","properties":{"AlertId":"a1","EntityType":"Machine",` +
		`"DeviceId":"d1","DeviceName":"ws-1","LocalIP":"fe80::1","Categories":"[\"Malware\",\"Execution\",\"Persistence\",\"Execution\"]",` +
		`"AttackTechniques":"[\"Scheduled Task (T1053.005)\",\"Command and Scripting Interpreter (T1059)\",\"bad (X1)\",\"\"]",` +
		`"ThreatFamily":"Emotet","Severity":"LOW"}}`, true},
	{"IPv6 with a zone", `{"properties":{"LocalIP":"fe80::1%eth0"}}`, true},
	{"year out of range", `{"alertCreationTime":"0000-01-01T00:30:00+01:00","firstEventTime":"9999-12-31T23:59:59-01:00"}`, false},
	{"escapes", `{"title":"quote \" backslash \\ \u2028 \u0001 <&>","computerDnsName":"HOST\u00c9.example","category":"Collection"}`, false},
	{"every tactic", `{"properties":{"Categories":"[\"Reconnaissance\",\"ResourceDevelopment\",\"InitialAccess\",\"Execution\",` +
		`\"Persistence\",\"PrivilegeEscalation\",\"DefenseEvasion\",\"CredentialAccess\",\"Discovery\",\"LateralMovement\",` +
		`\"Collection\",\"CommandAndControl\",\"Exfiltration\",\"Impact\",\"Exploit\",\"SuspiciousActivity\"]"}}`, true},
	{"severity unspecified", `{"severity":"UnSpecified","category":"Ransomware"}`, false},
}

// ecsUsers are user objects beyond the documented one.
var ecsUsers = []string{``, `{}`, `{"accountName":"user1"}`, `{"accountSid":"S-1-5-18"}`,
	`{"accountName":"a","accountDomain":"a","accountSid":"a"}`, `{"accountName":5,"accountDomain":"contoso"}`}

// ecsGenerated are documents beyond the golden ones: every input and
// variant with every status, and the users.
func ecsGenerated(t testing.TB) map[string][]byte {
	docs := make(map[string][]byte)
	ins := ecsInputs(t)
	for _, v := range ecsVariants {
		ins = append(ins, ecsInput{v.name, goodID, []byte(v.alert), v.record, userWithoutOData(t)})
	}
	for _, u := range ecsUsers {
		ins = append(ins, ecsInput{"user " + u, goodID, readFile(t, "testdata/alert.json"), false, []byte(u)})
	}
	for _, in := range ins {
		for _, st := range ecsStatuses() {
			docs[in.name+" "+st.name] = schemas.AppendECS(nil, ecsOutput(in, st))
		}
	}
	return docs
}

func ecsGoldenDocs(t testing.TB) map[string][]byte {
	docs := make(map[string][]byte)
	for _, g := range ecsGoldens(t) {
		docs[g.file] = readFile(t, filepath.Join("testdata", "ecs", g.file))
	}
	return docs
}

func TestECSSchemaAcceptsEveryDocument(t *testing.T) {
	sch := compileECSSchema(t)
	for _, docs := range []map[string][]byte{ecsGoldenDocs(t), ecsGenerated(t)} {
		for name, doc := range docs {
			if err := validate(t, sch, doc); err != nil {
				t.Errorf("%s: %v\n%s", name, err, doc)
			}
		}
	}
}

func TestECSSchemaRejects(t *testing.T) {
	sch := compileECSSchema(t)
	ins := ecsInputs(t)
	good := string(schemas.AppendECS(nil, ecsOutput(ins[4], ecsStatusNamed(t, "enriched"))))
	notFound := string(schemas.AppendECS(nil, ecsOutput(ins[1], ecsStatusNamed(t, "not_found"))))
	upd := string(schemas.AppendECS(nil, ecsOutput(ins[0], ecsStatusNamed(t, "update"))))
	for _, base := range []string{good, notFound, upd} {
		if err := validate(t, sch, []byte(base)); err != nil {
			t.Fatalf("a base document fails: %v", err)
		}
	}
	tests := []struct {
		name, base, old, new string
	}{
		{"extra top-level field", good, `{"@timestamp":`, `{"extra":1,"@timestamp":`},
		{"no @timestamp", good, `"@timestamp":"2026-11-29T21:31:06.562397547Z",`, ``},
		{"@timestamp not UTC", good, `"@timestamp":"2026-11-29T21:31:06.562397547Z"`, `"@timestamp":"2026-11-29T22:31:06.562397547+01:00"`},
		{"@timestamp not a time", good, `"@timestamp":"2026-11-29T21:31:06.562397547Z"`, `"@timestamp":"2026-13-29T21:31:06Z"`},
		{"other ECS version", good, `"version":"8.11.0"`, `"version":"1.12.0"`},
		{"extra event field", good, `"kind":"alert",`, `"kind":"alert","action":"x",`},
		{"event kind", good, `"kind":"alert"`, `"kind":"event"`},
		{"event category not ECS", good, `"category":["intrusion_detection","malware"]`, `"category":["intrusion_detection","ransomware"]`},
		{"event category a string", good, `"category":["intrusion_detection","malware"]`, `"category":"intrusion_detection"`},
		{"event type change", good, `"type":["info"]`, `"type":["info","change"]`},
		{"event severity not banded", good, `"severity":73`, `"severity":3`},
		{"event severity a string", good, `"severity":73`, `"severity":"73"`},
		{"event created without milliseconds", good, `"created":"2026-11-27T10:00:00.123Z"`, `"created":"2026-11-27T10:00:00Z"`},
		{"event id invalid", good, `"id":"638725836082216748_-1344635608"`, `"id":"a/b"`},
		{"rule empty", notFound, `"rule":{"name":"Suspicious PowerShell command line","category":"Execution"}`, `"rule":{}`},
		{"rule name empty", notFound, `"rule":{"name":"Suspicious PowerShell command line"`, `"rule":{"name":""`},
		{"tactic id a string", upd, `"tactic":{"id":["TA0002"]`, `"tactic":{"id":"TA0002"`},
		{"tactic id not ATT&CK", upd, `"tactic":{"id":["TA0002"]`, `"tactic":{"id":["Execution"]`},
		{"tactic without its name", upd, `,"name":["Execution"]`, ``},
		{"technique id of a sub-technique", good, `"technique":{"id":["T1486","T1059"]`, `"technique":{"id":["T1486","T1059.001"]`},
		{"technique ids repeated", good, `"technique":{"id":["T1486","T1059"]`, `"technique":{"id":["T1486","T1486"]`},
		{"no framework", good, `"framework":"MITRE ATT&CK",`, ``},
		{"host ip not an ip", good, `"hostname":"WS-8801.Contoso.local"`, `"hostname":"WS-8801.Contoso.local","ip":["ws-8801"]`},
		{"host name without hostname", good, `,"hostname":"WS-8801.Contoso.local"`, ``},
		{"extra user field", good, `"user":{"name":"jonas61"`, `"user":{"email":"j@example.com","name":"jonas61"`},
		{"user when not found", notFound, `,"defender_enricher":`, `,"user":{"name":"user1"},"defender_enricher":`},
		{"related when not found", notFound, `,"defender_enricher":`, `,"related":{"user":["user1"]},"defender_enricher":`},
		{"related users repeated", good, `"related":{"user":["jonas61",`, `"related":{"user":["jonas61","jonas61",`},
		{"raw user when not found", notFound, `"record":{`, `"user":{},"record":{`},
		{"unknown status", good, `"status":"enriched"`, `"status":"done"`},
		{"source missing when enriched", good, `"source":"api",`, ``},
		{"source empty", good, `"source":"api"`, `"source":""`},
		{"source when unavailable", upd, `"status":"enriched","source":"api"`, `"status":"unavailable","source":"api"`},
		{"user_cache when not found", notFound, `"source":"api"`, `"source":"user_cache"`},
		{"error empty", notFound, `"error":"alert or user not found (HTTP 404)"`, `"error":""`},
		{"extra enrichment field", good, `"source":"api",`, `"source":"api","retries":2,`},
		{"negative offset", good, `"offset":42`, `"offset":-1`},
		{"empty topic", good, `"topic":"defender.alerts"`, `"topic":""`},
		{"update of a skipped event", upd, `"status":"enriched","source":"api"`, `"status":"skipped"`},
		{"update previous status", upd, `"previous_status":"unavailable"`, `"previous_status":"failed"`},
		{"alert and record", notFound, `"record":{`, `"alert":{},"record":{`},
		{"no alert", good, `"microsoft":{"defender":{"alert":`, `"microsoft":{"defender":{"x":`},
		{"extra microsoft field", good, `"microsoft":{"defender":{`, `"microsoft":{"sentinel":{},"defender":{`},
		{"dotted key", good, `"ecs":{"version":"8.11.0"}`, `"ecs.version":"8.11.0"`},
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
	// An alert that is not an object gives a valid document that the
	// schema refuses: the connector never passes one.
	for _, alert := range []string{`[1,2]`, `"text"`, `null`, `{"title":`} {
		for _, record := range []bool{false, true} {
			doc := schemas.AppendECS(nil, &schemas.Output{AlertID: goodID, Alert: []byte(alert), Record: record,
				Enrichment: schemas.Enrichment{Status: schemas.StatusSkipped, EnrichedAt: testTime}, Origin: testOrigin})
			if err := validate(t, sch, doc); err == nil {
				t.Errorf("schema accepts the document of alert %s: %s", alert, doc)
			}
		}
	}
}

// ecsField is a row of the ECS field reference.
type ecsField struct{ typ, normalization string }

func readECSReference(t testing.TB) map[string]ecsField {
	t.Helper()
	f, err := os.Open(filepath.Join("ecs", "fields.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	header := "ECS_Version,Indexed,Field_Set,Field,Type,Level,Normalization,Example,Description"
	if len(rows) < 2 || strings.Join(rows[0], ",") != header {
		t.Fatalf("fields.csv does not start with %s", header)
	}
	ref := make(map[string]ecsField)
	for _, r := range rows[1:] {
		if _, dup := ref[r[3]]; dup {
			t.Fatalf("fields.csv lists %s twice", r[3])
		}
		ref[r[3]] = ecsField{typ: r[4], normalization: r[6]}
	}
	return ref
}

// ecsExempt reports whether an ECS document field is in one of the
// custom namespaces.
func ecsExempt(path string) bool {
	for _, ns := range []string{"defender_enricher", "microsoft.defender"} {
		if path == ns || strings.HasPrefix(path, ns+".") {
			return true
		}
	}
	return false
}

// ecsTypeFits reports whether a JSON value (decoded with UseNumber) fits
// an ECS field type.
func ecsTypeFits(typ string, v any) bool {
	switch typ {
	case "keyword", "constant_keyword", "match_only_text", "text", "wildcard":
		_, ok := v.(string)
		return ok
	case "long", "integer", "short", "byte":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	case "float", "scaled_float", "double", "half_float":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Float64()
		return err == nil
	case "date":
		s, ok := v.(string)
		if !ok {
			return false
		}
		_, err := time.Parse(time.RFC3339Nano, s)
		return err == nil
	case "ip":
		s, ok := v.(string)
		if !ok {
			return false
		}
		_, err := netip.ParseAddr(s)
		return err == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "object", "flattened", "nested":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

// checkECSReference checks every field of doc outside the custom
// namespaces against the field reference: it exists, and its JSON type
// fits its ECS type, an array only where ECS normalizes the field to one.
// It returns the fields it saw.
func checkECSReference(t *testing.T, name string, doc []byte, ref map[string]ecsField) []string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var top map[string]any
	if err := d.Decode(&top); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var seen []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		if ecsExempt(path) {
			return
		}
		f, known := ref[path]
		if m, ok := v.(map[string]any); ok && (!known || f.typ != "object" && f.typ != "flattened" && f.typ != "nested") {
			if known {
				t.Errorf("%s: %s is an object, ECS has it as %s", name, path, f.typ)
			}
			for k, c := range m {
				if path != "" {
					k = path + "." + k
				}
				walk(k, c)
			}
			return
		}
		seen = append(seen, path)
		if !known {
			t.Errorf("%s: %s is not in the ECS field reference", name, path)
			return
		}
		if list, ok := v.([]any); ok {
			if f.normalization != "array" {
				t.Errorf("%s: %s is an array; ECS does not normalize it to one", name, path)
			}
			for _, e := range list {
				if !ecsTypeFits(f.typ, e) {
					t.Errorf("%s: %s holds %v, which does not fit ECS type %s", name, path, e, f.typ)
				}
			}
			return
		}
		if !ecsTypeFits(f.typ, v) {
			t.Errorf("%s: %s is %v, which does not fit ECS type %s", name, path, v, f.typ)
		}
	}
	walk("", top)
	return seen
}

func TestECSFieldReference(t *testing.T) {
	ref := readECSReference(t)
	seen := make(map[string]bool)
	for _, docs := range []map[string][]byte{ecsGoldenDocs(t), ecsGenerated(t)} {
		for name, doc := range docs {
			for _, f := range checkECSReference(t, name, doc, ref) {
				seen[f] = true
			}
		}
	}
	// Every ECS field the schema allows is written by some document, so
	// that every one was checked.
	for _, f := range ecsSchemaFields(t) {
		if !ecsExempt(f) && !seen[f] {
			t.Errorf("no document writes %s", f)
		}
	}
}

// ecsSchemaFields lists the leaf fields ecs.v1.schema.json describes.
func ecsSchemaFields(t testing.TB) []string {
	b, err := fs.ReadFile(schemas.FS, ecsSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(path string, s map[string]any)
	walk = func(path string, s map[string]any) {
		props, ok := s["properties"].(map[string]any)
		if !ok {
			out = append(out, path)
			return
		}
		for k, v := range props {
			if path != "" {
				k = path + "." + k
			}
			sub, _ := v.(map[string]any)
			walk(k, sub)
		}
	}
	walk("", s)
	slices.Sort(out)
	return out
}

func TestECSSchemaFieldsAreInTheReference(t *testing.T) {
	ref := readECSReference(t)
	n := 0
	for _, f := range ecsSchemaFields(t) {
		if ecsExempt(f) {
			continue
		}
		n++
		if _, ok := ref[f]; !ok {
			t.Errorf("the schema describes %s, which is not in the ECS field reference", f)
		}
	}
	if n < 30 {
		t.Errorf("the schema describes only %d ECS fields", n)
	}
}

// TestECSReferenceFile checks that fields.csv holds whole field sets of
// one ECS version, each set with its documented fields.
func TestECSReferenceFile(t *testing.T) {
	f, err := os.Open(filepath.Join("ecs", "fields.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	sets := make(map[string]int)
	for _, r := range rows[1:] {
		if r[0] != "8.12.0-dev" {
			t.Errorf("%s: version %s", r[3], r[0])
		}
		if r[2] != "base" && !strings.HasPrefix(r[3], r[2]+".") {
			t.Errorf("%s is not a field of its set %s", r[3], r[2])
		}
		sets[r[2]]++
	}
	want := map[string]int{"base": 4, "cloud": 33, "ecs": 1, "event": 26, "host": 44, "related": 4, "rule": 10, "user": 54}
	for set, n := range want {
		if sets[set] != n {
			t.Errorf("field set %s has %d rows, want %d", set, sets[set], n)
		}
	}
	if sets["threat"] < 300 {
		t.Errorf("field set threat has %d rows", sets["threat"])
	}
	if len(sets) != len(want)+1 {
		t.Errorf("field sets %v", sets)
	}
}

// ecsDoc decodes a document for the mapping tests.
func ecsDoc(t *testing.T, out []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return m
}

// ecsGet returns the value at a dotted path of a decoded document, or nil.
func ecsGet(doc map[string]any, path string) any {
	var v any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// ecsJSON is v in JSON, as AppendECS escapes strings.
func ecsJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestAppendECSMapping(t *testing.T) {
	ins := ecsInputs(t)
	enriched := ecsStatusNamed(t, "enriched")
	tests := []struct {
		name   string
		in     ecsInput
		status ecsStatus
		want   map[string]string // path: JSON of the value, "" for absent
	}{
		{"alert object", ins[0], enriched, map[string]string{
			"@timestamp":               `"2021-01-26T20:33:57.7220239Z"`,
			"event.start":              `"2021-01-26T20:31:32.9562661Z"`,
			"event.end":                `"2021-01-26T20:31:33.0577322Z"`,
			"event.created":            `"2026-11-27T10:00:00.123Z"`,
			"event.severity":           `21`,
			"event.category":           `["intrusion_detection"]`,
			"event.provider":           `"Microsoft Defender for Endpoint"`,
			"event.id":                 `"da637472900382838869_1364969609"`,
			"rule.name":                `"Low-reputation arbitrary code executed by signed executable"`,
			"rule.id":                  `"17e10bbc-3a68-474a-8aad-faef14d43952"`,
			"rule.category":            `"Execution"`,
			"threat.tactic.id":         `["TA0002"]`,
			"threat.tactic.name":       `["Execution"]`,
			"threat.technique.id":      `["T1064","T1085","T1220"]`,
			"threat.software":          ``,
			"host.id":                  `"111e6dd8c833c8a052ea231ec1b19adaf497b625"`,
			"host.name":                `"temp123.middleeast.corp.microsoft.com"`,
			"user.name":                `"user1"`,
			"user.domain":              `"contoso"`,
			"user.id":                  `"S-1-5-21-72051607-1745760036-109187956-93922"`,
			"related.user":             `["user1","S-1-5-21-72051607-1745760036-109187956-93922","contoso\\user1"]`,
			"cloud.account.id":         `"a839b112-1253-6432-9bf6-94542403f21c"`,
			"microsoft.defender.user":  ecsJSON(ecsDoc(t, userWithoutOData(t))),
			"defender_enricher.update": ``,
		}},
		{"AlertInfo record", ins[1], ecsStatusNamed(t, "unavailable"), map[string]string{
			"@timestamp":                    `"2024-03-12T10:15:39Z"`,
			"event.severity":                `47`,
			"event.start":                   ``,
			"rule.name":                     `"Suspicious PowerShell command line"`,
			"rule.category":                 `"Execution"`,
			"threat.technique.id":           `["T1059"]`,
			"threat.technique.subtechnique": `{"id":["T1059.001"]}`,
			"host":                          ``,
			"user":                          ``,
			"related":                       ``,
			"microsoft.defender.user":       ``,
			"defender_enricher.enrichment":  `{"enriched_at":"2026-11-27T10:00:00.123Z","error":"defender: unavailable: circuit breaker open after repeated failures of the Defender API: no call for 732ms more (open for 1s)","status":"unavailable"}`,
			"cloud.account.id":              `"a839b112-1253-6432-9bf6-94542403f21c"`,
			"microsoft.defender.alert":      ``,
			"microsoft.defender.record.properties.AlertId": `"da638458473376270421_-1259470431"`,
		}},
		{"AlertEvidence record", ins[2], ecsStatusNamed(t, "update"), map[string]string{
			"host.id":                  `"0111b647235c26159bec3e5eb6c8c3a0cc3ab766"`,
			"host.name":                `"ws-0042.contoso.com"`,
			"host.hostname":            `"ws-0042.contoso.com"`,
			"host.ip":                  ``,
			"rule.category":            `"Execution"`,
			"event.severity":           ``,
			"event.type":               `["info"]`,
			"defender_enricher.update": `{"previous_enriched_at":"2026-11-27T09:50:00.456Z","previous_status":"unavailable"}`,
		}},
		{"another Defender service", ins[3], ecsStatusNamed(t, "skipped"), map[string]string{
			"event.provider":               `"Microsoft Defender for Office 365"`,
			"event.severity":               `21`,
			"threat.tactic.name":           `["Initial Access"]`,
			"threat.technique":             ``,
			"defender_enricher.enrichment": `{"enriched_at":"2026-11-27T10:00:00.123Z","status":"skipped"}`,
		}},
		{"ransomware", ins[4], ecsStatusNamed(t, "enriched-user_cache"), map[string]string{
			"event.category":                `["intrusion_detection","malware"]`,
			"event.severity":                `73`,
			"@timestamp":                    `"2026-11-29T21:31:06.562397547Z"`,
			"host.name":                     `"ws-8801.contoso.local"`,
			"host.hostname":                 `"WS-8801.Contoso.local"`,
			"threat.tactic":                 ``,
			"threat.framework":              `"MITRE ATT&CK"`,
			"threat.technique.id":           `["T1486","T1059"]`,
			"threat.technique.subtechnique": `{"id":["T1059.001"]}`,
			"threat.software.name":          `"Akira"`,
			"defender_enricher.enrichment":  `{"enriched_at":"2026-11-27T10:00:00.123Z","source":"user_cache","status":"enriched"}`,
			"related.user":                  `["jonas61","S-1-5-21-3418539524-1496149344-567949748-86813","northwind\\jonas61"]`,
		}},
	}
	variant := func(name string) ecsInput {
		for _, v := range ecsVariants {
			if v.name == name {
				return ecsInput{v.name, goodID, []byte(v.alert), v.record, userWithoutOData(t)}
			}
		}
		t.Fatalf("no variant %s", name)
		return ecsInput{}
	}
	tests = append(tests, []struct {
		name   string
		in     ecsInput
		status ecsStatus
		want   map[string]string
	}{
		{"empty object", variant("empty object"), enriched, map[string]string{
			"@timestamp": `"2026-11-27T10:00:00.123Z"`, "rule": ``, "threat": ``, "host": ``, "cloud": ``,
			"event.provider": `"Microsoft Defender for Endpoint"`, "microsoft.defender.alert": `{}`,
		}},
		{"no alert", variant("no alert"), enriched, map[string]string{"microsoft.defender.alert": `{}`}},
		{"wrong types", variant("wrong types"), enriched, map[string]string{
			"@timestamp": `"2026-11-27T10:00:00.123Z"`, "rule": ``, "host": ``, "cloud": ``, "event.severity": ``,
			"threat.technique.id": `["T1059"]`,
		}},
		{"record wrong types", variant("record wrong types"), enriched, map[string]string{
			"@timestamp": `"2026-11-27T10:00:00.123Z"`, "rule": ``, "host": ``, "cloud": ``,
			"threat.technique.id": `["T1059"]`,
		}},
		{"offset times", variant("with link, IPv6 and offset times"), enriched, map[string]string{
			"@timestamp":     `"2026-01-02T01:04:05.5Z"`,
			"event.start":    `"2026-01-02T01:04:05Z"`,
			"event.end":      `"2026-01-02T04:34:06Z"`,
			"event.url":      `"https://security.microsoft.com/alerts/a1"`,
			"event.severity": `21`,
			"event.category": `["intrusion_detection"]`,
			"rule.category":  `"UnwantedSoftware"`,
			"threat":         ``,
		}},
		{"evidence", variant("evidence with an IP"), enriched, map[string]string{
			"@timestamp":                    `"2024-03-12T10:15:43Z"`,
			"host.ip":                       `["fe80::1"]`,
			"event.severity":                `21`,
			"event.category":                `["intrusion_detection","malware"]`,
			"rule.category":                 `"Malware"`,
			"threat.tactic.id":              `["TA0002","TA0003"]`,
			"threat.tactic.name":            `["Execution","Persistence"]`,
			"threat.technique.id":           `["T1053","T1059"]`,
			"threat.technique.subtechnique": `{"id":["T1053.005"]}`,
			"threat.software.name":          `"Emotet"`,
		}},
		{"zone", variant("IPv6 with a zone"), enriched, map[string]string{"host": ``}},
		{"years", variant("year out of range"), enriched, map[string]string{
			"@timestamp": `"2026-11-27T10:00:00.123Z"`, "event.start": ``,
		}},
		{"escapes", variant("escapes"), enriched, map[string]string{
			"rule.name":     ecsJSON("quote \" backslash \\ \u2028 \u0001 <&>"),
			"host.name":     ecsJSON("host\u00c9.example"),
			"host.hostname": ecsJSON("HOST\u00c9.example"),
		}},
		{"every tactic", variant("every tactic"), enriched, map[string]string{
			"threat.tactic.id": `["TA0043","TA0042","TA0001","TA0002","TA0003","TA0004","TA0005","TA0006","TA0007","TA0008","TA0009","TA0011","TA0010","TA0040"]`,
			"threat.tactic.name": `["Reconnaissance","Resource Development","Initial Access","Execution","Persistence",` +
				`"Privilege Escalation","Defense Evasion","Credential Access","Discovery","Lateral Movement","Collection",` +
				`"Command and Control","Exfiltration","Impact"]`,
			"rule.category": `"Reconnaissance"`,
		}},
		{"unspecified", variant("severity unspecified"), enriched, map[string]string{
			"event.severity": ``, "event.category": `["intrusion_detection","malware"]`,
		}},
	}...)
	for _, tt := range tests {
		doc := ecsDoc(t, schemas.AppendECS(nil, ecsOutput(tt.in, tt.status)))
		for path, want := range tt.want {
			v := ecsGet(doc, path)
			got := ""
			if v != nil {
				got = ecsJSON(v)
			}
			if got != want {
				t.Errorf("%s: %s = %s, want %s", tt.name, path, got, want)
			}
		}
	}
}

func TestAppendECSSeverity(t *testing.T) {
	for sev, want := range map[string]string{
		"Informational": "21", "Low": "21", "Medium": "47", "High": "73", "Critical": "99", "HIGH": "73", "medium": "47",
		"UnSpecified": "", "": "", "Severe": "", " High": "",
	} {
		alert, _ := json.Marshal(map[string]string{"severity": sev})
		doc := ecsDoc(t, schemas.AppendECS(nil, &schemas.Output{AlertID: "a", Alert: alert,
			Enrichment: schemas.Enrichment{Status: schemas.StatusSkipped}, Origin: testOrigin}))
		got := ""
		if v := ecsGet(doc, "event.severity"); v != nil {
			got = ecsJSON(v)
		}
		if got != want {
			t.Errorf("%q: event.severity = %s, want %s", sev, got, want)
		}
	}
}

func TestAppendECSUserOnlyWhenEnriched(t *testing.T) {
	for _, st := range ecsStatuses() {
		out := schemas.AppendECS(nil, ecsOutput(ecsInputs(t)[0], st))
		doc := ecsDoc(t, out)
		enriched := st.e.Status == schemas.StatusEnriched
		for _, path := range []string{"user", "related", "microsoft.defender.user"} {
			if (ecsGet(doc, path) != nil) != enriched {
				t.Errorf("%s: %s present = %v", st.name, path, !enriched)
			}
		}
	}
	for _, u := range []string{`[]`, `null`, `"user1"`, `{"accountName":`, `7`} {
		o := ecsOutput(ecsInputs(t)[0], ecsStatusNamed(t, "enriched"))
		o.User = []byte(u)
		doc := ecsDoc(t, schemas.AppendECS(nil, o))
		if ecsGet(doc, "user") != nil || ecsGet(doc, "related") != nil || ecsGet(doc, "microsoft.defender.user") != nil {
			t.Errorf("user %s written: %v", u, doc)
		}
	}
}

// TestAppendECSKeepsTheInput checks that the alert or record and the user
// are written byte for byte, and that dst is extended, not replaced.
func TestAppendECSKeepsTheInput(t *testing.T) {
	for _, in := range ecsInputs(t) {
		for _, st := range ecsStatuses() {
			out := schemas.AppendECS([]byte("prefix"), ecsOutput(in, st))
			if !bytes.HasPrefix(out, []byte("prefix")) {
				t.Fatal("dst not kept")
			}
			var doc struct {
				Microsoft struct {
					Defender map[string]json.RawMessage `json:"defender"`
				} `json:"microsoft"`
			}
			if err := json.Unmarshal(out[len("prefix"):], &doc); err != nil {
				t.Fatalf("%s %s: %v", in.name, st.name, err)
			}
			key := "alert"
			if in.record {
				key = "record"
			}
			if !bytes.Equal(doc.Microsoft.Defender[key], in.alert) {
				t.Errorf("%s %s: %s not kept: %s", in.name, st.name, key, doc.Microsoft.Defender[key])
			}
			if st.e.Status == schemas.StatusEnriched && !bytes.Equal(doc.Microsoft.Defender["user"], bytes.TrimSpace(in.user)) {
				t.Errorf("%s %s: user not kept: %s", in.name, st.name, doc.Microsoft.Defender["user"])
			}
		}
	}
}

// TestAppendECSAnyAlert checks that an alert that is not an object, or
// not JSON, still gives a valid document, with the alert under the
// namespace.
func TestAppendECSAnyAlert(t *testing.T) {
	for _, alert := range []string{`[]`, `[1,{"title":"x"}]`, `"text"`, `42`, `null`, `true`, ` {"title":"spaced"} `,
		`{"title":`, `{"a":1}{"b":2}`, "\xff\xfe", `{"title":"x",}`, strings.Repeat("[", 20000)} {
		for _, record := range []bool{false, true} {
			out := schemas.AppendECS(nil, &schemas.Output{AlertID: goodID, Alert: []byte(alert), Record: record, User: testUser,
				Enrichment: schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, Origin: testOrigin})
			if !json.Valid(out) {
				t.Fatalf("%.40q: not JSON: %.200s", alert, out)
			}
			var doc struct {
				Microsoft struct {
					Defender map[string]json.RawMessage `json:"defender"`
				} `json:"microsoft"`
			}
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatal(err)
			}
			key := "alert"
			if record {
				key = "record"
			}
			got := doc.Microsoft.Defender[key]
			if json.Valid([]byte(alert)) {
				if string(got) != strings.TrimSpace(alert) {
					t.Errorf("%.40q: written as %.60s", alert, got)
				}
			} else {
				// encoding/json's own round trip is the reference for what
				// the string of invalid UTF-8 decodes to.
				ref, _ := json.Marshal(alert)
				var want, s string
				if err := json.Unmarshal(ref, &want); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(got, &s); err != nil || s != want {
					t.Errorf("%.40q: written as %.60s", alert, got)
				}
			}
		}
	}
}

// FuzzAppendECS checks that any alert and user give valid JSON, which the
// schema accepts when the alert is a JSON object, with the alert kept.
func FuzzAppendECS(f *testing.F) {
	for _, in := range ecsInputs(f) {
		f.Add(in.alert, in.user, in.record, uint8(0))
	}
	for i, v := range ecsVariants {
		f.Add([]byte(v.alert), []byte(ecsUsers[i%len(ecsUsers)]), v.record, uint8(i))
	}
	f.Add([]byte(`[]`), []byte(`x`), false, uint8(3))
	sch := compileECSSchema(f)
	statuses := ecsStatuses()
	f.Fuzz(func(t *testing.T, alert, user []byte, record bool, pick uint8) {
		st := statuses[int(pick)%len(statuses)]
		o := &schemas.Output{AlertID: goodID, Alert: alert, Record: record, User: user, Enrichment: st.e, Origin: testOrigin, Update: st.update}
		out := schemas.AppendECS(nil, o)
		if nesting(alert) > 9_000 {
			return // nested beyond what encoding/json reads once embedded
		}
		if !json.Valid(out) {
			t.Fatalf("not JSON: %q", out)
		}
		trimmed := bytes.TrimLeft(alert, " \t\r\n")
		if !json.Valid(alert) || len(trimmed) == 0 || trimmed[0] != '{' {
			return
		}
		if err := validate(t, sch, out); err != nil {
			t.Fatalf("schema rejects: %v\n%s", err, out)
		}
		var doc struct {
			Microsoft struct {
				Defender map[string]json.RawMessage `json:"defender"`
			} `json:"microsoft"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		key := "alert"
		if record {
			key = "record"
		}
		if !bytes.Equal(doc.Microsoft.Defender[key], bytes.TrimSpace(alert)) {
			t.Fatalf("alert not kept: %q", doc.Microsoft.Defender[key])
		}
	})
}

func BenchmarkAppendECS(b *testing.B) {
	ins := ecsInputs(b)
	for _, in := range []ecsInput{ins[0], ins[2]} {
		b.Run(in.name, func(b *testing.B) {
			o := &schemas.Output{AlertID: in.id, Alert: in.alert, Record: in.record, User: in.user,
				Enrichment: schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, Origin: testOrigin}
			dst := make([]byte, 0, 16<<10)
			b.SetBytes(int64(len(in.alert) + len(in.user)))
			b.ReportAllocs()
			for b.Loop() {
				dst = schemas.AppendECS(dst[:0], o)
			}
		})
	}
}
