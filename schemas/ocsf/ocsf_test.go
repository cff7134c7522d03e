package ocsf_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

const (
	schemaFile = "../ocsf-1.8.0-detection_finding.schema.json"
	schemaID   = "https://github.com/defender-enricher/defender-enricher/schemas/ocsf-1.8.0-detection_finding.schema.json"
	validFile  = "testdata/defender_detection_finding.json"
)

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := doc.(map[string]any)
	if m["$id"] != schemaID {
		t.Fatalf("$id = %v, want %s", m["$id"], schemaID)
	}
	if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("$schema = %v", m["$schema"])
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(schemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(schemaID)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// valid returns a fresh copy of the valid Detection Finding.
func valid(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile(validFile)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v.(map[string]any)
}

// obj returns the object at a path of member names and array indexes.
func obj(t *testing.T, doc map[string]any, path ...any) map[string]any {
	t.Helper()
	var v any = doc
	for _, p := range path {
		switch p := p.(type) {
		case string:
			v = v.(map[string]any)[p]
		case int:
			v = v.([]any)[p]
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%v: not an object", path)
	}
	return m
}

func TestValidDefenderDetectionFinding(t *testing.T) {
	s := compile(t)
	if err := s.Validate(valid(t)); err != nil {
		t.Fatalf("the valid Detection Finding is refused: %v", err)
	}
}

// leaves returns the errors without causes, where the validation failed.
func leaves(e *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(e.Causes) == 0 {
		return []*jsonschema.ValidationError{e}
	}
	var out []*jsonschema.ValidationError
	for _, c := range e.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}

func location(e *jsonschema.ValidationError) string {
	if len(e.InstanceLocation) == 0 {
		return ""
	}
	return "/" + strings.Join(e.InstanceLocation, "/")
}

func additional(name string) func(jsonschema.ErrorKind) bool {
	return func(k jsonschema.ErrorKind) bool {
		a, ok := k.(*kind.AdditionalProperties)
		return ok && slices.Contains(a.Properties, name)
	}
}

func missing(name string) func(jsonschema.ErrorKind) bool {
	return func(k jsonschema.ErrorKind) bool {
		r, ok := k.(*kind.Required)
		return ok && slices.Contains(r.Missing, name)
	}
}

func isKind[K jsonschema.ErrorKind]() func(jsonschema.ErrorKind) bool {
	return func(k jsonschema.ErrorKind) bool {
		_, ok := k.(K)
		return ok
	}
}

func either(a, b func(jsonschema.ErrorKind) bool) func(jsonschema.ErrorKind) bool {
	return func(k jsonschema.ErrorKind) bool { return a(k) || b(k) }
}

func TestInvalidDetectionFindings(t *testing.T) {
	s := compile(t)
	tests := []struct {
		name   string
		change func(t *testing.T, doc map[string]any)
		at     string // where validation must fail
		kind   func(jsonschema.ErrorKind) bool
	}{
		{"undeclared top-level field", func(t *testing.T, d map[string]any) {
			d["alert_id"] = "da1"
		}, "", additional("alert_id")},
		{"undeclared field in device", func(t *testing.T, d map[string]any) {
			obj(t, d, "device")["machine_id"] = "1e5b"
		}, "/device", additional("machine_id")},
		{"undeclared field in device.os", func(t *testing.T, d map[string]any) {
			obj(t, d, "device", "os")["platform"] = "Windows11"
		}, "/device/os", additional("platform")},
		{"undeclared field in evidences[0].user", func(t *testing.T, d map[string]any) {
			obj(t, d, "evidences", 0, "user")["sid"] = "S-1-5-18"
		}, "/evidences/0/user", additional("sid")},
		{"undeclared field in metadata.loggers[0]", func(t *testing.T, d map[string]any) {
			obj(t, d, "metadata", "loggers", 0)["hop"] = 1
		}, "/metadata/loggers/0", additional("hop")},
		{"undeclared field in enrichments[0]", func(t *testing.T, d map[string]any) {
			obj(t, d, "enrichments", 0)["source"] = "graph"
		}, "/enrichments/0", additional("source")},
		{"wrong class_uid", func(t *testing.T, d map[string]any) {
			d["class_uid"] = json.Number("2001")
		}, "/class_uid", isKind[*kind.Const]()},
		{"wrong category_uid", func(t *testing.T, d map[string]any) {
			d["category_uid"] = json.Number("1")
		}, "/category_uid", isKind[*kind.Const]()},
		{"type_uid of no activity", func(t *testing.T, d map[string]any) {
			d["type_uid"] = json.Number("200404")
		}, "/type_uid", isKind[*kind.Enum]()},
		{"activity_id out of its enum", func(t *testing.T, d map[string]any) {
			d["activity_id"] = json.Number("4")
		}, "/activity_id", isKind[*kind.Enum]()},
		{"severity_id out of its enum", func(t *testing.T, d map[string]any) {
			d["severity_id"] = json.Number("7")
		}, "/severity_id", isKind[*kind.Enum]()},
		{"status_id out of its enum", func(t *testing.T, d map[string]any) {
			d["status_id"] = json.Number("7")
		}, "/status_id", isKind[*kind.Enum]()},
		{"severity_id not an integer", func(t *testing.T, d map[string]any) {
			d["severity_id"] = "High"
		}, "/severity_id", isKind[*kind.Type]()},
		{"analytic type_id out of its enum", func(t *testing.T, d map[string]any) {
			obj(t, d, "finding_info", "analytic")["type_id"] = json.Number("12")
		}, "/finding_info/analytic/type_id", isKind[*kind.Enum]()},
		{"os type_id out of its enum", func(t *testing.T, d map[string]any) {
			obj(t, d, "device", "os")["type_id"] = json.Number("1")
		}, "/device/os/type_id", isKind[*kind.Enum]()},
		{"account type_id out of its enum", func(t *testing.T, d map[string]any) {
			obj(t, d, "evidences", 0, "user", "account")["type_id"] = json.Number("20")
		}, "/evidences/0/user/account/type_id", isKind[*kind.Enum]()},
		{"time as a string", func(t *testing.T, d map[string]any) {
			d["time"] = "2024-06-10T06:13:20.123Z"
		}, "/time", isKind[*kind.Type]()},
		{"finding_info.created_time as a string", func(t *testing.T, d map[string]any) {
			obj(t, d, "finding_info")["created_time"] = "1718000000123"
		}, "/finding_info/created_time", isKind[*kind.Type]()},
		{"time with a fraction", func(t *testing.T, d map[string]any) {
			d["time"] = json.Number("1718000000123.5")
		}, "/time", isKind[*kind.Type]()},
		{"time_dt not a date-time", func(t *testing.T, d map[string]any) {
			d["time_dt"] = "10 June 2024"
		}, "/time_dt", either(isKind[*kind.Pattern](), isKind[*kind.Format]())},
		{"device.ip not an IP address", func(t *testing.T, d map[string]any) {
			obj(t, d, "device")["ip"] = "ws-042"
		}, "/device/ip", isKind[*kind.Pattern]()},
		{"user.email_addr not an email address", func(t *testing.T, d map[string]any) {
			obj(t, d, "evidences", 0, "user")["email_addr"] = "jdoe"
		}, "/evidences/0/user/email_addr", isKind[*kind.Pattern]()},
		{"evidences not an array", func(t *testing.T, d map[string]any) {
			d["evidences"] = obj(t, d, "evidences", 0)
		}, "/evidences", isKind[*kind.Type]()},
		{"missing time", func(t *testing.T, d map[string]any) {
			delete(d, "time")
		}, "", missing("time")},
		{"missing finding_info", func(t *testing.T, d map[string]any) {
			delete(d, "finding_info")
		}, "", missing("finding_info")},
		{"missing finding_info.uid", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "finding_info"), "uid")
		}, "/finding_info", missing("uid")},
		{"missing metadata.product", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "metadata"), "product")
		}, "/metadata", missing("product")},
		{"missing metadata.version", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "metadata"), "version")
		}, "/metadata", missing("version")},
		{"missing analytic.type_id", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "finding_info", "analytic"), "type_id")
		}, "/finding_info/analytic", missing("type_id")},
		{"missing device.type_id", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "device"), "type_id")
		}, "/device", missing("type_id")},
		{"missing enrichments[0].data", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "enrichments", 0), "data")
		}, "/enrichments/0", missing("data")},
		{"user with none of account, name, uid", func(t *testing.T, d map[string]any) {
			u := obj(t, d, "evidences", 0, "user")
			delete(u, "account")
			delete(u, "name")
			delete(u, "uid")
		}, "/evidences/0/user", missing("uid")},
		{"evidence with no artifact", func(t *testing.T, d map[string]any) {
			delete(obj(t, d, "evidences", 0), "user")
		}, "/evidences/0", missing("user")},
		{"attack with neither tactic nor technique", func(t *testing.T, d map[string]any) {
			a := obj(t, d, "finding_info", "attacks", 0)
			delete(a, "tactic")
			delete(a, "technique")
			delete(a, "sub_technique")
		}, "/finding_info/attacks/0", missing("technique")},
		{"observable type_id that OCSF does not define", func(t *testing.T, d map[string]any) {
			obj(t, d, "observables", 0)["type_id"] = json.Number("28")
		}, "/observables/0/type_id", isKind[*kind.Enum]()},
		{"cloud profile named without cloud", func(t *testing.T, d map[string]any) {
			m := obj(t, d, "metadata")
			m["profiles"] = append(m["profiles"].([]any), "cloud")
		}, "", missing("cloud")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := valid(t)
			tt.change(t, doc)
			err := s.Validate(doc)
			if err == nil {
				t.Fatal("accepted")
			}
			var ve *jsonschema.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T: %v", err, err)
			}
			var seen []string
			for _, l := range leaves(ve) {
				if location(l) == tt.at && tt.kind(l.ErrorKind) {
					return
				}
				seen = append(seen, fmt.Sprintf("%s: %T %v", location(l), l.ErrorKind, l.ErrorKind))
			}
			t.Errorf("refused, but not at %q for the expected reason; failures:\n%s", tt.at, strings.Join(seen, "\n"))
		})
	}
}

func TestAcceptedVariants(t *testing.T) {
	s := compile(t)
	tests := []struct {
		name   string
		change func(t *testing.T, doc map[string]any)
	}{
		{"anything in unmapped", func(t *testing.T, d map[string]any) {
			d["unmapped"] = map[string]any{"a": []any{json.Number("1"), map[string]any{"b": nil}}, "c": true}
		}},
		{"enrichment data of any JSON type", func(t *testing.T, d map[string]any) {
			obj(t, d, "enrichments", 0)["data"] = []any{"x", json.Number("2")}
		}},
		{"severity_id Other", func(t *testing.T, d map[string]any) {
			d["severity_id"] = json.Number("99")
			d["severity"] = "Severe"
		}},
		{"each activity", func(t *testing.T, d map[string]any) {
			d["activity_id"] = json.Number("3")
			d["type_uid"] = json.Number("200403")
		}},
		{"a deprecated attribute", func(t *testing.T, d map[string]any) {
			obj(t, d, "finding_info")["product_uid"] = "mde"
		}},
		{"the cloud profile with cloud", func(t *testing.T, d map[string]any) {
			m := obj(t, d, "metadata")
			m["profiles"] = append(m["profiles"].([]any), "cloud")
			d["cloud"] = map[string]any{"provider": "Azure", "region": "westeurope"}
		}},
		{"the security_control profile", func(t *testing.T, d map[string]any) {
			d["action_id"] = json.Number("3")
			d["disposition_id"] = json.Number("15")
			d["attacks"] = obj(t, d, "finding_info")["attacks"]
		}},
		{"a user known by name only", func(t *testing.T, d map[string]any) {
			u := obj(t, d, "evidences", 0, "user")
			for k := range u {
				if k != "name" {
					delete(u, k)
				}
			}
		}},
		{"a recursive process", func(t *testing.T, d map[string]any) {
			obj(t, d, "evidences", 0)["process"] = map[string]any{
				"pid":            json.Number("4242"),
				"cmd_line":       "powershell.exe -enc ...",
				"parent_process": map[string]any{"pid": json.Number("100"), "name": "explorer.exe"},
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := valid(t)
			tt.change(t, doc)
			if err := s.Validate(doc); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
}
