package schemas_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/defender-enricher/defender-enricher/schemas"
)

func compileOCSFSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	b, err := fs.ReadFile(schemas.FS, schemas.OCSFSchema)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(schemas.OCSFSchema, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(schemas.OCSFSchema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The OCSF golden files: the same inputs and statuses as the ECS ones.
func ocsfGoldens(t testing.TB) []ecsGolden {
	return ecsGoldens(t)
}

// TestAppendOCSFGolden compares each Detection Finding with its golden
// file in testdata/ocsf, in compact form; -update rewrites them.
func TestAppendOCSFGolden(t *testing.T) {
	for _, g := range ocsfGoldens(t) {
		path := filepath.Join("testdata", "ocsf", g.file)
		got := schemas.AppendOCSF(nil, g.o)
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

func TestOCSFGoldenFilesAreAllCases(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("testdata", "ocsf"))
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	for _, g := range ocsfGoldens(t) {
		want = append(want, g.file)
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("testdata/ocsf holds %v, want %v", got, want)
	}
}

// Every status of every input form is a Detection Finding that OCSF
// 1.8.0's schema, strict on undeclared fields, accepts.
func TestOCSFSchemaAcceptsEveryFinding(t *testing.T) {
	sch := compileOCSFSchema(t)
	n := 0
	for _, in := range ecsInputs(t) {
		for _, st := range ecsStatuses() {
			doc := schemas.AppendOCSF(nil, ecsOutput(in, st))
			if err := validate(t, sch, doc); err != nil {
				t.Errorf("%s %s: %v\n%s", in.name, st.name, err, doc)
			}
			n++
		}
	}
	for _, g := range ocsfGoldens(t) {
		if err := validate(t, sch, readFile(t, filepath.Join("testdata", "ocsf", g.file))); err != nil {
			t.Errorf("golden %s: %v", g.file, err)
		}
	}
	if n < 40 {
		t.Fatalf("only %d findings checked", n)
	}
}

// What the mapping puts where, on the alert object and an AlertInfo
// record; and that the schema really is strict.
func TestAppendOCSFMapping(t *testing.T) {
	ins := ecsInputs(t)
	var f map[string]any
	doc := schemas.AppendOCSF(nil, ecsOutput(ins[0], ecsStatusNamed(t, "enriched")))
	if err := json.Unmarshal(doc, &f); err != nil {
		t.Fatal(err)
	}
	get := func(m map[string]any, path string) any {
		var v any = m
		for _, k := range strings.Split(path, ".") {
			switch x := v.(type) {
			case map[string]any:
				v = x[k]
			case []any:
				if len(x) == 0 {
					return nil
				}
				v = x[0].(map[string]any)[k]
			default:
				return nil
			}
		}
		return v
	}
	for path, want := range map[string]any{
		"class_uid": 2004.0, "category_uid": 2.0, "type_uid": 200401.0, "activity_id": 1.0,
		"severity_id": 2.0, "status_id": 1.0, // Low, New
		"finding_info.uid":                             "da637472900382838869_1364969609",
		"finding_info.title":                           "Low-reputation arbitrary code executed by signed executable",
		"finding_info.analytic.name":                   "WindowsDefenderAtp",
		"finding_info.attacks.technique.uid":           "T1064",
		"finding_info.attacks.tactic.uid":              "TA0002",
		"metadata.product.name":                        "Microsoft Defender for Endpoint",
		"metadata.product.vendor_name":                 "Microsoft",
		"metadata.version":                             "1.8.0",
		"metadata.correlation_uid":                     "1126093",
		"metadata.loggers.name":                        "defender-enricher",
		"device.hostname":                              "temp123.middleeast.corp.microsoft.com",
		"device.uid":                                   "111e6dd8c833c8a052ea231ec1b19adaf497b625",
		"evidences.user.account.type_id":               2.0,
		"enrichments.name":                             "user",
		"enrichments.value":                            "enriched",
		"enrichments.data.source":                      "api",
		"unmapped.defender.alert.incidentId":           1126093.0,
		"unmapped.origin.topic":                        "defender.alerts",
		"finding_info.created_time":                    1611693237722.0,
		"finding_info.first_seen_time":                 1611693092956.0,
		"enrichments.data.user.accountName":            get(f, "unmapped.defender.user.accountName"),
		"evidences.user.name":                          get(f, "unmapped.defender.user.accountName"),
		"evidences.user.uid":                           get(f, "unmapped.defender.user.accountSid"),
		"unmapped.defender.alert.relatedUser.userName": "temp123",
	} {
		if got := get(f, path); got != want || got == nil {
			t.Errorf("%s = %#v, want %#v", path, got, want)
		}
	}

	// An update, of a record: activity Update, and the record kept.
	upd := schemas.AppendOCSF(nil, ecsOutput(ins[1], ecsStatusNamed(t, "update")))
	var u map[string]any
	if err := json.Unmarshal(upd, &u); err != nil {
		t.Fatal(err)
	}
	if get(u, "type_uid") != 200402.0 || get(u, "activity_name") != "Update" || get(u, "unmapped.defender.record.properties.AlertId") != ins[1].id ||
		get(u, "enrichments.data.update.previous_status") != "unavailable" {
		t.Errorf("update of a record: %s", upd)
	}
	// No user without enrichment.
	nf := schemas.AppendOCSF(nil, ecsOutput(ins[0], ecsStatusNamed(t, "not_found")))
	if bytes.Contains(nf, []byte(`"evidences"`)) || bytes.Contains(nf, []byte(`"accountSid"`)) {
		t.Errorf("a not_found finding holds a user: %s", nf)
	}

	// The schema is strict: an undeclared field at the top, in the device
	// and in the user is refused, as is a severity outside its enum.
	sch := compileOCSFSchema(t)
	for name, edit := range map[string]func(map[string]any){
		"top":    func(m map[string]any) { m["alert_id"] = "x" },
		"device": func(m map[string]any) { m["device"].(map[string]any)["dns"] = "x" },
		"user": func(m map[string]any) {
			m["evidences"].([]any)[0].(map[string]any)["user"].(map[string]any)["sid"] = "x"
		},
		"severity": func(m map[string]any) { m["severity_id"] = 7 },
		"class":    func(m map[string]any) { m["class_uid"] = 2001 },
		"time":     func(m map[string]any) { m["time"] = "2026-11-27T10:00:00Z" },
	} {
		var m map[string]any
		_ = json.Unmarshal(doc, &m)
		edit(m)
		b, _ := json.Marshal(m)
		if err := validate(t, sch, b); err == nil {
			t.Errorf("the schema takes a finding edited at %s", name)
		}
	}
}

// Any alert and user bytes give valid JSON, and, for an object alert, a
// finding the schema accepts.
func FuzzAppendOCSF(f *testing.F) {
	for _, in := range ecsInputs(f) {
		f.Add(in.alert, in.user, in.record)
	}
	f.Add([]byte(`[1,2]`), []byte(`"x"`), false)
	f.Add([]byte(`{"severity":{"a":1},"mitreTechniques":"T1059","incidentId":"x\"y"}`), []byte(`{"isDomainAdmin":"yes"}`), false)
	sch := compileOCSFSchema(f)
	f.Fuzz(func(t *testing.T, alert, user []byte, record bool) {
		o := &schemas.Output{AlertID: "da637472900382838869_1364969609", Alert: alert, Record: record, User: user,
			Enrichment: schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, Origin: testOrigin}
		doc := schemas.AppendOCSF(nil, o)
		if !json.Valid(doc) {
			t.Fatalf("not JSON: %s", doc)
		}
		var v map[string]any
		if json.Unmarshal(alert, &v) == nil && json.Valid(user) {
			if err := validate(t, sch, doc); err != nil {
				t.Fatalf("%v\n%s", err, doc)
			}
		}
	})
}

// BenchmarkFormats is the cost of one event in each output format, on the
// alert object and an AlertEvidence record, enriched: compare the formats
// side by side in one run.
func BenchmarkFormats(b *testing.B) {
	ins := ecsInputs(b)
	for _, in := range []ecsInput{ins[0], ins[2]} {
		for _, format := range schemas.Formats {
			enc, err := format.Encoder()
			if err != nil {
				b.Fatal(err)
			}
			b.Run(in.name+"/"+string(format), func(b *testing.B) {
				o := &schemas.Output{AlertID: in.id, Alert: in.alert, Record: in.record, User: in.user,
					Enrichment: schemas.Enrichment{Status: schemas.StatusEnriched, Source: schemas.SourceAPI, EnrichedAt: testTime}, Origin: testOrigin}
				dst := make([]byte, 0, 16<<10)
				b.ReportAllocs()
				for b.Loop() {
					dst = enc(dst[:0], o)
				}
			})
		}
	}
}
