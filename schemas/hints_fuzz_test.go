package schemas_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/defender-enricher/defender-enricher/defender"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// FuzzReadHints checks ReadHints against a reading of the same bytes by
// encoding/json, and that it never panics and never names a user it could
// not match. Seeds live in testdata/fuzz/FuzzReadHints.
func FuzzReadHints(f *testing.F) {
	f.Add(readFile(f, "testdata/alert.json"), false)
	f.Add([]byte(alertWith(`"relatedUser":{"userName":"user1","domainName":"contoso"},"evidence":[`+
		userEvidence(`"user1"`, `"contoso"`, `"`+sid1+`"`)+`]`)), false)
	f.Add([]byte(evidenceRecord(`"EntityType":"User","AccountSid":"`+sid1+`","AccountName":"user1","AccountDomain":"contoso"`)), true)

	f.Fuzz(func(t *testing.T, in []byte, record bool) {
		h := schemas.ReadHints(in, record)
		if !h.User.IsZero() && !h.User.Matchable() {
			t.Fatalf("a user that matches nothing: %+v", h.User)
		}
		if (h.User.Domain == "") != (h.User.Name == "") {
			t.Fatalf("a domain without a name or a name without a domain: %+v", h.User)
		}
		if len(h.Severity) > schemas.MaxHintBytes || len(h.User.SID) > schemas.MaxHintBytes ||
			len(h.User.Domain) > schemas.MaxHintBytes || len(h.User.Name) > schemas.MaxHintBytes {
			t.Fatalf("a string longer than MaxHintBytes: %+v", h)
		}
		want, mentions := referenceHints(in, record)
		if h.Severity != want.Severity {
			t.Fatalf("severity %q, want %q", h.Severity, want.Severity)
		}
		// More mentions than ReadHints keeps apart may name several users
		// for a while: it may then give up on one encoding/json finds.
		if mentions > 8 && h.User.IsZero() {
			return
		}
		if !sameRef(h.User, want.User) {
			t.Fatalf("user %+v, want %+v (%d mentions)", h.User, want.User, mentions)
		}
	})
}

func sameRef(a, b defender.UserRef) bool {
	return strings.EqualFold(a.SID, b.SID) && strings.EqualFold(a.Domain, b.Domain) && strings.EqualFold(a.Name, b.Name)
}

// referenceHints is ReadHints's contract over what encoding/json reads,
// written apart from it: the mentions are gathered first, then taken as
// one user when they are all connected by a shared SID or domain\name and
// no two that share one differ on the other. It also returns the number
// of mentions.
func referenceHints(in []byte, record bool) (schemas.Hints, int) {
	body := bytes.TrimPrefix(in, []byte("\xef\xbb\xbf"))
	if !json.Valid(body) || !utf8.Valid(body) || nesting(body) > schemas.MaxDepthLimit {
		return schemas.Hints{}, 0
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil || top == nil {
		return schemas.Hints{}, 0
	}
	var h schemas.Hints
	var ms []refMention
	if record {
		props := top["properties"]
		var p map[string]json.RawMessage
		if len(props) == 0 || props[0] != '{' || json.Unmarshal(props, &p) != nil {
			return schemas.Hints{}, 0
		}
		h.Severity, _ = refString(p["Severity"])
		if isUser(p["EntityType"]) {
			ms = append(ms, newRefMention(p["AccountSid"], p["AccountDomain"], p["AccountName"], false))
		}
	} else {
		h.Severity, _ = refString(top["severity"])
		bad := false
		switch rel := top["relatedUser"]; {
		case len(rel) == 0 || string(rel) == "null":
		case rel[0] != '{':
			bad = true
		default:
			var r map[string]json.RawMessage
			if json.Unmarshal(rel, &r) != nil {
				panic("an object that does not decode")
			}
			ms = append(ms, newRefMention(nil, r["domainName"], r["userName"], false))
		}
		switch ev := top["evidence"]; {
		case len(ev) == 0 || string(ev) == "null":
		case ev[0] != '[':
			bad = true
		default:
			var ents []json.RawMessage
			if json.Unmarshal(ev, &ents) != nil {
				panic("an array that does not decode")
			}
			for _, e := range ents {
				var m map[string]json.RawMessage
				if e[0] != '{' || json.Unmarshal(e, &m) != nil || !isUser(m["entityType"]) {
					continue
				}
				others := set(m["aadUserId"]) || set(m["userPrincipalName"])
				ms = append(ms, newRefMention(m["userSid"], m["domainName"], m["accountName"], others))
			}
		}
		if bad {
			return h, len(ms)
		}
	}
	var named []refMention
	for _, m := range ms {
		if m.some {
			named = append(named, m)
		}
	}
	h.User = oneUser(named)
	return h, len(named)
}

type refMention struct {
	ref  defender.UserRef
	some bool // names someone
	ok   bool // every field readable
}

// set reports whether a raw value is there and neither null nor "".
func set(raw json.RawMessage) bool {
	return len(raw) > 0 && string(raw) != "null" && string(raw) != `""`
}

func newRefMention(sid, domain, name json.RawMessage, others bool) refMention {
	s, okS := refString(sid)
	d, okD := refString(domain)
	n, okN := refString(name)
	m := refMention{ok: okS && okD && okN}
	m.some = !m.ok || s != "" || d != "" || n != "" || others
	if m.ok {
		m.ref.SID = s
		if d != "" && n != "" {
			m.ref.Domain, m.ref.Name = d, n
		}
	}
	return m
}

// refString decodes a hint string: absent, null or a string of at most
// MaxHintBytes bytes.
func refString(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil || len(s) > schemas.MaxHintBytes {
		return "", false
	}
	return s, true
}

func isUser(raw json.RawMessage) bool {
	s, ok := refString(raw)
	return ok && asciiLowerEqual(s, "user")
}

func oneUser(ms []refMention) defender.UserRef {
	if len(ms) == 0 {
		return defender.UserRef{}
	}
	for _, m := range ms {
		if !m.ok || m.ref.SID == "" && m.ref.Name == "" {
			return defender.UserRef{}
		}
	}
	bySID := func(a, b defender.UserRef) bool {
		return a.SID != "" && b.SID != "" && strings.EqualFold(a.SID, b.SID)
	}
	byName := func(a, b defender.UserRef) bool {
		return a.Name != "" && b.Name != "" && strings.EqualFold(a.Domain, b.Domain) && strings.EqualFold(a.Name, b.Name)
	}
	// Connected components by a shared SID or name, and no conflict
	// between two mentions that share one.
	group := make([]int, len(ms))
	for i := range group {
		group[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for group[i] != i {
			i = group[i]
		}
		return i
	}
	for i := range ms {
		for j := i + 1; j < len(ms); j++ {
			a, b := ms[i].ref, ms[j].ref
			s, n := bySID(a, b), byName(a, b)
			if !s && !n {
				continue
			}
			if a.SID != "" && b.SID != "" && !s || a.Name != "" && b.Name != "" && !n {
				return defender.UserRef{}
			}
			group[find(i)] = find(j)
		}
	}
	var u defender.UserRef
	for i, m := range ms {
		if find(i) != find(0) {
			return defender.UserRef{}
		}
		if u.SID == "" {
			u.SID = m.ref.SID
		}
		if u.Name == "" {
			u.Domain, u.Name = m.ref.Domain, m.ref.Name
		}
	}
	return u
}
