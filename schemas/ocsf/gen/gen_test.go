package main

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
)

const (
	vendored  = "../1.8.0"
	generated = "../../ocsf-1.8.0-detection_finding.schema.json"
	fixture   = "testdata/mini"
)

func TestGeneratedSchemaIsCurrent(t *testing.T) {
	res, err := Generate(os.DirFS(vendored), "detection_finding")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(generated)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.Schema, want) {
		got := strings.Split(string(res.Schema), "\n")
		old := strings.Split(string(want), "\n")
		line := 0
		for line < len(got) && line < len(old) && got[line] == old[line] {
			line++
		}
		var g, o string
		if line < len(got) {
			g = got[line]
		}
		if line < len(old) {
			o = old[line]
		}
		t.Fatalf("%s is not what the generator writes; run go generate ./schemas/ocsf\nfirst difference, line %d:\n  file:      %s\n  generator: %s",
			generated, line+1, o, g)
	}
}

// TestVendoredFilesAreThoseTheClassNeeds checks that the copied OCSF
// folder holds exactly the files the generator reads, besides OCSF's
// LICENSE and NOTICE.
func TestVendoredFilesAreThoseTheClassNeeds(t *testing.T) {
	res, err := Generate(os.DirFS(vendored), "detection_finding")
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	err = fs.WalkDir(os.DirFS(vendored), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && p != "LICENSE" && p != "NOTICE" {
			have = append(have, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(have)
	for _, f := range []string{"LICENSE", "NOTICE"} {
		if _, err := os.Stat(filepath.Join(vendored, f)); err != nil {
			t.Error(err)
		}
	}
	if !slices.Equal(have, res.Files) {
		t.Errorf("the folder holds\n%s\nthe generator reads\n%s", strings.Join(have, "\n"), strings.Join(res.Files, "\n"))
	}
	for _, f := range []string{
		"categories.json", "dictionary.json", "version.json",
		"events/base_event.json", "events/findings/finding.json", "events/findings/detection_finding.json",
		"objects/object.json", "objects/_entity.json", "objects/_resource.json",
		"objects/metadata.json", "objects/logger.json", "objects/finding_info.json", "objects/evidences.json",
		"objects/user.json", "objects/account.json", "objects/enrichment.json", "objects/device.json",
		"profiles/cloud.json", "profiles/datetime.json", "profiles/host.json", "profiles/osint.json",
		"profiles/security_control.json", "profiles/incident.json",
	} {
		if !slices.Contains(res.Files, f) {
			t.Errorf("the generator does not read %s", f)
		}
	}
}

func TestGenerateIsDeterministic(t *testing.T) {
	first, err := Generate(os.DirFS(vendored), "detection_finding")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		again, err := Generate(os.DirFS(vendored), "detection_finding")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first.Schema, again.Schema) {
			t.Fatal("two runs differ")
		}
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "thing.schema.json")
	if err := run([]string{"-schema", fixture, "-class", "thing", "-out", out}); err != nil {
		t.Fatal(err)
	}
	res, err := Generate(os.DirFS(fixture), "thing")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, res.Schema) {
		t.Error("-out does not hold the schema")
	}

	list := filepath.Join(dir, "files.txt")
	if err := run([]string{"-schema", fixture, "-class", "thing", "-files", "-out", list}); err != nil {
		t.Fatal(err)
	}
	b, err = os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != strings.Join(res.Files, "\n")+"\n" {
		t.Errorf("-files wrote %q", b)
	}

	for _, args := range [][]string{
		{},
		{"-schema", fixture},
		{"-class", "thing"},
		{"-schema", fixture, "-class", "thing", "extra"},
		{"-schema", fixture, "-class", "nothing"},
	} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}

// generateFixture returns the schema of the fixture class, decoded.
func generateFixture(t *testing.T) (map[string]any, *Result) {
	t.Helper()
	res, err := Generate(os.DirFS(fixture), "thing")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(res.Schema, &doc); err != nil {
		t.Fatalf("the output is not JSON: %v", err)
	}
	return doc, res
}

// pointer returns the value at an RFC 6901 pointer, and whether it exists.
func pointer(doc any, ptr string) (any, bool) {
	if ptr == "" {
		return doc, true
	}
	v := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := v.(type) {
		case map[string]any:
			x, ok := c[tok]
			if !ok {
				return nil, false
			}
			v = x
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func canonical(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTypeMapping maps each kind of attribute of the fixture's widget
// object. A reference to a data type is replaced by the type's definition
// without its title and description.
func TestTypeMapping(t *testing.T) {
	doc, _ := generateFixture(t)
	defs := doc["$defs"].(map[string]any)
	props := defs["widget"].(map[string]any)["properties"].(map[string]any)
	tests := []struct {
		attr string
		want string
	}{
		{"flag", `{"type":"boolean"}`},
		{"score", `{"type":"number"}`},
		{"port", `{"maximum":65535,"minimum":0,"type":"integer"}`},
		{"created_time", `{"type":"integer"}`},
		{"created_time_dt", `{"format":"date-time","pattern":"^\\d{4}-\\d{2}-\\d{2}T","type":"string"}`},
		{"ip", `{"maxLength":40,"pattern":"^[0-9.:a-fA-F]+$","type":"string"}`},
		{"code", `{"maxLength":8,"pattern":"^[A-Z]+$","type":"string"}`},
		{"uid", `{"maxLength":8,"pattern":"^[A-Z]+$","type":"string"}`},
		{"level", `{"enum":["low","high"],"type":"string"}`},
		{"mode", `{"enum":["a","b"],"type":"string"}`},
		{"color_id", `{"enum":[0,1,2,99],"type":"integer"}`},
		{"data", `{}`},
		{"tags", `{"items":{"type":"string"},"type":"array"}`},
		{"name", `{"type":"string"}`},
		{"old", `{"deprecated":true,"type":"string"}`},
		{"parent", `{"$ref":"#/$defs/widget"}`},
		{"gadget", `{"$ref":"#/$defs/gadget"}`},
		{"shade", `{"type":"string"}`},
	}
	for _, tt := range tests {
		t.Run(tt.attr, func(t *testing.T) {
			p, ok := props[tt.attr].(map[string]any)
			if !ok {
				t.Fatalf("widget has no property %s", tt.attr)
			}
			got := make(map[string]any)
			for k, v := range p {
				if k != "title" && k != "description" {
					got[k] = v
				}
			}
			if ref, ok := got["$ref"].(string); ok && strings.HasSuffix(ref, "_t") {
				delete(got, "$ref")
				def, ok := defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
				if !ok {
					t.Fatalf("%s is not defined", ref)
				}
				for k, v := range def {
					if k != "title" && k != "description" {
						got[k] = v
					}
				}
			}
			if g := canonical(t, got); g != tt.want {
				t.Errorf("got  %s\nwant %s", g, tt.want)
			}
		})
	}

	top := doc["properties"].(map[string]any)
	for attr, want := range map[string]string{
		"unmapped": `{"description":"Anything.","title":"Unmapped Data","type":"object"}`,
		"widgets":  `{"description":"Some widgets.","items":{"$ref":"#/$defs/widget"},"title":"Widgets","type":"array"}`,
		"time":     `{"$ref":"#/$defs/timestamp_t","description":"When it happened.","title":"Event Time"}`,
	} {
		if g := canonical(t, top[attr]); g != want {
			t.Errorf("%s: got  %s\nwant %s", attr, g, want)
		}
	}
}

// TestTypeMappingOfOCSF checks the definitions of OCSF 1.8.0's data types
// in the generated schema.
func TestTypeMappingOfOCSF(t *testing.T) {
	b, err := os.ReadFile(generated)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ptr  string
		want string
	}{
		{"/$defs/timestamp_t/type", `"integer"`},
		{"/$defs/datetime_t/type", `"string"`},
		{"/$defs/datetime_t/format", `"date-time"`},
		{"/$defs/port_t/type", `"integer"`},
		{"/$defs/port_t/minimum", `0`},
		{"/$defs/port_t/maximum", `65535`},
		{"/$defs/ip_t/maxLength", `40`},
		{"/$defs/mac_t/pattern", `"^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$"`},
		{"/$defs/uuid_t/pattern", `"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"`},
		{"/$defs/username_t/type", `"string"`},
		{"/$defs/hostname_t/type", `"string"`},
		{"/$defs/url_t/type", `"string"`},
		{"/$defs/email_t/type", `"string"`},
		{"/$defs/subnet_t/maxLength", `42`},
		{"/properties/time/$ref", `"#/$defs/timestamp_t"`},
		{"/properties/time_dt/$ref", `"#/$defs/datetime_t"`},
		{"/properties/unmapped/type", `"object"`},
		{"/properties/raw_data_size/type", `"integer"`},
		{"/properties/is_alert/type", `"boolean"`},
		{"/properties/confidence_score/type", `"integer"`},
		{"/$defs/enrichment/properties/data/type", ``},
		{"/$defs/cvss/properties/base_score/type", `"number"`},
		{"/$defs/user/properties/name/$ref", `"#/$defs/username_t"`},
		{"/$defs/device/properties/ip/$ref", `"#/$defs/ip_t"`},
		{"/$defs/network_endpoint/properties/port/$ref", `"#/$defs/port_t"`},
		{"/$defs/process/properties/parent_process/$ref", `"#/$defs/process"`},
		{"/$defs/resource_details/properties/uid/$ref", `"#/$defs/resource_uid_t"`},
		// Every observable type id of OCSF 1.8.0's core schema.
		{"/$defs/observable/properties/type_id/enum", `[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,30,31,32,33,34,35,36,37,38,39,40,41,42,44,45,47,48,99]`},
	}
	for _, tt := range tests {
		v, ok := pointer(doc, tt.ptr)
		switch {
		case tt.want == "" && ok:
			t.Errorf("%s: %s, want nothing", tt.ptr, canonical(t, v))
		case tt.want == "":
		case !ok:
			t.Errorf("%s: missing, want %s", tt.ptr, tt.want)
		default:
			if g := canonical(t, v); g != tt.want {
				t.Errorf("%s: got %s, want %s", tt.ptr, g, tt.want)
			}
		}
	}
}

// TestResolution checks extends, $include and profiles on the fixture:
// thing extends thing_base, which extends base_event, which includes the
// datetime and extra profiles; widget extends _entity, which extends
// object, and includes the shade profile.
func TestResolution(t *testing.T) {
	doc, res := generateFixture(t)
	tests := []struct {
		ptr  string
		want string // "" if the pointer must not exist
	}{
		// The class: uids from the category and the chain's enums.
		{"/title", `"OCSF 0.1.0 Thing (class_uid 7005)"`},
		{"/$id", `"https://github.com/defender-enricher/defender-enricher/schemas/ocsf-0.1.0-thing.schema.json"`},
		{"/properties/class_uid/const", `7005`},
		{"/properties/class_uid/enum", ``},
		{"/properties/category_uid/const", `7`},
		{"/properties/category_uid/enum", ``},
		{"/properties/type_uid/enum", `[700500,700501,700599]`},
		{"/properties/activity_id/enum", `[0,1,99]`},
		{"/properties/severity_id/enum", `[0,1,2,99]`},
		{"/properties/severity_id/description", `"How bad it is.\n\nValues: 0 Unknown; 1 Low; 2 High; 99 Other."`},
		// thing_base's attribute is inherited.
		{"/properties/gadget/$ref", `"#/$defs/gadget"`},
		// Requirements: thing makes count and widget required; note
		// leaves its profile and is required; extra stays in its
		// profile, required only when metadata.profiles names it.
		{"/required", `["activity_id","category_uid","class_uid","count","metadata","note","severity_id","time","type_uid","widget"]`},
		{"/properties/note/description", `"A note the class always has."`},
		{"/properties/extra/type", `"string"`},
		{"/allOf/0/if/properties/metadata/properties/profiles/contains/const", `"extra"`},
		{"/allOf/0/then/required", `["extra"]`},
		{"/allOf/1", ``},
		{"/additionalProperties", `false`},
		// The datetime profile adds NAME_dt beside each timestamp.
		{"/properties/time_dt/$ref", `"#/$defs/datetime_t"`},
		{"/properties/count_dt", ``},
		{"/$defs/widget/properties/created_time_dt/$ref", `"#/$defs/datetime_t"`},
		// Objects: _entity's attributes and constraint, widget's
		// overrides, the shade profile's attribute optional.
		{"/$defs/widget/properties/name/description", `"The name of the widget."`},
		{"/$defs/widget/properties/uid/description", `"The identifier of the entity."`},
		{"/$defs/widget/properties/uid/$ref", `"#/$defs/code_t"`},
		{"/$defs/widget/properties/shade/type", `"string"`},
		{"/$defs/widget/required", `["color_id"]`},
		{"/$defs/widget/properties/color_id/description", `"The color.\n\nValues: 0 Unknown; 1 Red; 2 Green (deprecated); 99 Other."`},
		{"/$defs/widget/anyOf", `[{"required":["name"]},{"required":["uid"]}]`},
		{"/$defs/widget/additionalProperties", `false`},
		// gadget clears the constraint it inherits and is deprecated.
		{"/$defs/gadget/anyOf", ``},
		{"/$defs/gadget/deprecated", `true`},
		{"/$defs/gadget/required", `["count"]`},
		// Only what is reached is defined.
		{"/$defs/unused", ``},
		{"/$defs/_entity", ``},
		{"/$defs/object", ``},
		{"/$defs/string_t", ``},
		{"/$defs/short_t", ``},
		{"/$defs/code_t/maxLength", `8`},
		{"/$defs/metadata/required", `["version"]`},
		// observable.type_id: the file's 0 and 99, then the ids of a
		// data type (2), a dictionary attribute (13), an object (20),
		// an object's attribute (31) and a class's observables path
		// (40).
		{"/properties/observables/items/$ref", `"#/$defs/observable"`},
		{"/$defs/observable/properties/type_id/enum", `[0,2,13,20,31,40,99]`},
		{"/$defs/observable/properties/type_id/description", `"The type.\n\nValues: 0 Unknown; 2 IP Address; 13 Code; 20 Widget; 31 Widget: uid; 40 Thing: widget.name; 99 Other."`},
		{"/$defs/observable/required", `["type_id"]`},
	}
	for _, tt := range tests {
		v, ok := pointer(doc, tt.ptr)
		switch {
		case tt.want == "" && ok:
			t.Errorf("%s: %s, want nothing", tt.ptr, canonical(t, v))
		case tt.want == "":
		case !ok:
			t.Errorf("%s: missing, want %s", tt.ptr, tt.want)
		default:
			if g := canonical(t, v); g != tt.want {
				t.Errorf("%s: got %s, want %s", tt.ptr, g, tt.want)
			}
		}
	}

	wantFiles := []string{
		"categories.json", "dictionary.json",
		"events/base_event.json", "events/things/thing.json", "events/things/thing_base.json",
		"objects/_entity.json", "objects/gadget.json", "objects/metadata.json", "objects/object.json", "objects/observable.json", "objects/widget.json",
		"profiles/datetime.json", "profiles/extra.json", "profiles/shade.json",
		"version.json",
	}
	if !slices.Equal(res.Files, wantFiles) {
		t.Errorf("files read: %q", res.Files)
	}
}

func TestResolvedEntities(t *testing.T) {
	src, err := newSource(os.DirFS(fixture))
	if err != nil {
		t.Fatal(err)
	}
	c, err := src.Class("thing")
	if err != nil {
		t.Fatal(err)
	}
	if c.UID != 5 || c.Category != "things" || c.Caption != "Thing" {
		t.Errorf("thing: uid %d, category %q, caption %q", c.UID, c.Category, c.Caption)
	}
	if !slices.Equal(c.Chain, []string{"base_event", "thing_base", "thing"}) {
		t.Errorf("thing: chain %q", c.Chain)
	}
	if !slices.Equal(c.Profiles, []string{"datetime", "extra"}) {
		t.Errorf("thing: profiles %q", c.Profiles)
	}
	if p, ok := c.Attributes["note"]["profile"]; !ok || p != nil {
		t.Errorf("thing.note: profile %v, %v; want null", p, ok)
	}
	if p := c.Attributes["extra"]["profile"]; p != "extra" {
		t.Errorf("thing.extra: profile %v", p)
	}
	if r := c.Attributes["note"]["requirement"]; r != "required" {
		t.Errorf("thing.note: requirement %v", r)
	}
	// The dictionary's sibling survives the merge.
	if s := c.Attributes["activity_id"]["sibling"]; s != "activity_name" {
		t.Errorf("thing.activity_id: sibling %v", s)
	}

	w, err := src.Object("widget")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.Chain, []string{"object", "_entity", "widget"}) {
		t.Errorf("widget: chain %q", w.Chain)
	}
	if !slices.Equal(w.Profiles, []string{"shade"}) {
		t.Errorf("widget: profiles %q", w.Profiles)
	}
	if p := w.Attributes["shade"]["profile"]; p != "shade" {
		t.Errorf("widget.shade: profile %v", p)
	}
	if typ := w.Attributes["uid"]["type"]; typ != "code_t" {
		t.Errorf("widget.uid: type %v", typ)
	}
	if r := w.Attributes["name"]["requirement"]; r != "recommended" {
		t.Errorf("widget.name: requirement %v", r)
	}
	// Resolving a base after a child extends it gives the base with the
	// dictionary merged in as well.
	e, err := src.Object("_entity")
	if err != nil {
		t.Fatal(err)
	}
	if typ := e.Attributes["uid"]["type"]; typ != "string_t" {
		t.Errorf("_entity.uid: type %v", typ)
	}
}

// mutated returns the fixture with some files replaced.
func mutated(t *testing.T, files map[string]string) fstest.MapFS {
	t.Helper()
	m := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS(fixture), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(fixture, p))
		if err != nil {
			return err
		}
		m[p] = &fstest.MapFile{Data: b}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		m[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return m
}

func TestGenerateErrors(t *testing.T) {
	const object = `{"caption": "W", "description": "W.", "extends": "object", "name": "widget", "attributes": %s}`
	widget := func(attrs string) map[string]string {
		return map[string]string{"objects/widget.json": strings.Replace(object, "%s", attrs, 1)}
	}
	tests := []struct {
		name  string
		class string
		files map[string]string
		want  string
	}{
		{"no such class", "nothing", nil, `no class "nothing"`},
		{"attribute not in the dictionary", "thing",
			widget(`{"color": {"requirement": "optional"}}`), "attribute color is not in the dictionary"},
		{"extends cycle", "thing",
			map[string]string{"objects/object.json": `{"caption": "O", "description": "O.", "name": "object", "extends": "widget", "attributes": {}}`},
			"extends cycle"},
		{"file that is not JSON", "thing",
			map[string]string{"objects/gadget.json": `{"caption": `}, "objects/gadget.json"},
		{"unknown constraint", "thing",
			map[string]string{"objects/gadget.json": `{"caption": "G", "description": "G.", "extends": "object", "name": "gadget", "attributes": {"count": {}}, "constraints": {"all": ["count"]}}`},
			"unknown constraint all"},
		{"constraint naming a missing attribute", "thing",
			map[string]string{"objects/gadget.json": `{"caption": "G", "description": "G.", "extends": "object", "name": "gadget", "attributes": {"count": {}}, "constraints": {"at_least_one": ["count", "uid"]}}`},
			"names uid, which is not an attribute"},
		{"include of a file that is not a profile", "thing",
			widget(`{"$include": ["objects/gadget.json"]}`), "not a profile"},
		{"include of a missing file", "thing",
			widget(`{"$include": ["profiles/none.json"]}`), "profiles/none.json"},
		{"requirement out of its values", "thing",
			widget(`{"name": {"requirement": "mandatory"}}`), "widget.name: requirement mandatory"},
		{"enum key not an integer", "thing",
			widget(`{"color_id": {"enum": {"red": {"caption": "Red"}}}}`), `enum key "red" is not an integer`},
		{"name unlike the file", "thing",
			map[string]string{"objects/gadget.json": `{"caption": "G", "description": "G.", "name": "gizmo", "attributes": {}}`},
			`name is "gizmo"`},
		{"one observable id for two things", "thing",
			map[string]string{"objects/gadget.json": `{"caption": "G", "description": "G.", "extends": "object", "name": "gadget", "observable": 2, "attributes": {"count": {}}}`},
			`observable 2 is both "IP Address" and "G"`},
		{"unknown data type", "thing",
			map[string]string{"objects/gadget.json": `{"caption": "G", "description": "G.", "extends": "object", "name": "gadget", "attributes": {"uid": {"type": "sid_t"}}}`},
			"unknown data type sid_t"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Generate(mutated(t, tt.files), tt.class)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestEncodeOrder(t *testing.T) {
	v := map[string]any{
		"$defs":      map[string]any{"b": map[string]any{"type": "string", "title": "B"}, "a": true},
		"type":       "object",
		"$schema":    "s",
		"zeta":       json.Number("1.5"),
		"properties": map[string]any{"type": map[string]any{}, "description": map[string]any{"enum": []any{int64(1), "x"}}},
		"required":   []any{},
		"anyOf":      []any{map[string]any{"required": []any{"a"}}},
		"text":       "<code>&</code>",
	}
	want := `{
  "$schema": "s",
  "type": "object",
  "properties": {
    "description": {
      "enum": [1, "x"]
    },
    "type": {}
  },
  "required": [],
  "anyOf": [
    {
      "required": ["a"]
    }
  ],
  "$defs": {
    "a": true,
    "b": {
      "title": "B",
      "type": "string"
    }
  },
  "text": "<code>&</code>",
  "zeta": 1.5
}
`
	if got := string(encode(v)); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}
