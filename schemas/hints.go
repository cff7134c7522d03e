package schemas

import (
	"strings"

	"github.com/defender-enricher/defender-enricher/defender"
)

// Hints are what an alert says of itself that is worth knowing before the
// API is asked: how severe it is and which user it names.
type Hints struct {
	// Severity is the alert's severity as it came ("High", "Medium",
	// "Low", "Informational", ...), or "" when it has none, or none that
	// is a string of at most MaxHintBytes bytes.
	Severity string
	// User is the one user the alert names, or the zero UserRef when it
	// names none, several, or one it does not name well enough to be
	// matched (UserRef.Matchable holds whenever User is not zero).
	User defender.UserRef
}

// MaxHintBytes is the longest string, once decoded, that ReadHints takes
// from an alert. Account names, domains and SIDs are far shorter; a longer
// one is not read, and a user field that long makes the alert name no
// user that can be told.
const MaxHintBytes = 256

// maxUserGroups is how many distinct users ReadHints keeps apart while it
// reads one alert. An alert that names more at any one time names several
// users, whatever comes after; the bound keeps the work linear in the
// alert's size.
const maxUserGroups = 8

// The places ReadHints reads.
const (
	severityKey      = "severity"      // alert object
	relatedUserKey   = "relatedUser"   // alert object: {"userName","domainName"}
	evidenceKey      = "evidence"      // alert object: [{"entityType":"User",...}]
	recordSeverity   = "Severity"      // streaming record's properties
	recordEntityType = "EntityType"    // AlertEvidence record's properties
	recordSID        = "AccountSid"    // AlertEvidence record's properties
	recordName       = "AccountName"   // AlertEvidence record's properties
	recordDomain     = "AccountDomain" // AlertEvidence record's properties
	userEntity       = "User"
)

// ReadHints reads an alert's Hints. alert is one event's Alert: an alert
// object as the alerts API returns it (record false), or one streaming-API
// record, {"properties":{...}} (record true).
//
// From an alert object it reads "severity", "relatedUser" ("userName",
// "domainName") and the "evidence" entries whose "entityType" is "User"
// ("accountName", "domainName", "userSid"). From a record it reads
// properties.Severity and, for an AlertEvidence row whose EntityType is
// "User", properties.AccountSid, AccountName and AccountDomain. Keys match
// exactly, the last of a repeated key wins; "User" matches in any ASCII
// case.
//
// Each of these is a mention of a user. Mentions that agree on the SID or
// on domain\name (without regard to case) are one user, the SID of one
// filling in for the other that has none: an alert whose relatedUser is
// contoso\user1 and whose evidence lists contoso\user1 with its SID names
// one user, with that SID, each value as its first mention wrote it.
// User is set only when the alert names exactly one user, so that a cached
// answer is reused only for an alert that says unambiguously whom it is
// about. It is zero when:
//   - the alert names nobody (no such field, or every one null or empty);
//   - it names several users, or mentions that agree on one of the SID and
//     domain\name but differ on the other;
//   - a mention is not enough to tell the user: a domain without a name or
//     a name without a domain and no SID, or a User evidence entry with only
//     fields ReadHints does not compare (aadUserId, userPrincipalName);
//   - a user field is not a string or null, or is longer than MaxHintBytes,
//     relatedUser is not an object or evidence not an array;
//   - alert is not one JSON object (nested at most MaxDepthLimit deep, in
//     valid UTF-8), or, for a record, has no properties object.
//
// A domain without a name, or a name without a domain, next to a SID is
// left out: the SID tells the user. ReadHints is meant for the misses of
// the cache and reads the whole alert, in time linear in its length; it
// allocates only the strings of the user fields it reads. It never
// panics, whatever alert holds.
func ReadHints(alert []byte, record bool) Hints {
	start, end, serr := check(alert, MaxDepthLimit)
	if serr.kind != synOK || alert[start] != '{' {
		return Hints{}
	}
	obj := alert[start:end]
	if record {
		props, ok := member(obj, propertiesKey)
		if !ok || props[0] != '{' {
			return Hints{}
		}
		return recordHints(props)
	}
	return alertHints(obj)
}

// alertHints reads an alert object.
func alertHints(obj []byte) Hints {
	var severity, related, evidence []byte
	it := newObjectIter(obj)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch {
		case keyEquals(k, severityKey):
			severity = v
		case keyEquals(k, relatedUserKey):
			related = v
		case keyEquals(k, evidenceKey):
			evidence = v
		}
	}
	h := Hints{Severity: hintString(severity)}
	var users userSet
	switch {
	case related == nil || related[0] == 'n':
	case related[0] != '{':
		users.bad = true
	default:
		var name, domain []byte
		rit := newObjectIter(related)
		for {
			k, v, ok := rit.next()
			if !ok {
				break
			}
			switch {
			case keyEquals(k, "userName"):
				name = v
			case keyEquals(k, "domainName"):
				domain = v
			}
		}
		users.add(readMention(nil, domain, name, nil))
	}
	switch {
	case evidence == nil || evidence[0] == 'n':
	case evidence[0] != '[':
		users.bad = true
	default:
		eit := newArrayIter(evidence)
		for !users.bad {
			ent, ok := eit.next()
			if !ok {
				break
			}
			if ent[0] != '{' {
				continue // not an entity
			}
			users.add(evidenceMention(ent))
		}
	}
	h.User = users.one()
	return h
}

// evidenceMention reads one evidence entity of an alert object; it is a
// mention of nobody unless its entityType is User.
func evidenceMention(ent []byte) mention {
	var kind, name, domain, sid []byte
	var others []byte // a field that names a user without being compared
	it := newObjectIter(ent)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch {
		case keyEquals(k, "entityType"):
			kind = v
		case keyEquals(k, "accountName"):
			name = v
		case keyEquals(k, "domainName"):
			domain = v
		case keyEquals(k, "userSid"):
			sid = v
		case keyEquals(k, "aadUserId"), keyEquals(k, "userPrincipalName"):
			if v[0] != 'n' && string(v) != `""` {
				others = v
			}
		}
	}
	if !isUserEntity(kind) {
		return mention{}
	}
	return readMention(sid, domain, name, others)
}

// recordHints reads a streaming-API record's properties.
func recordHints(props []byte) Hints {
	var severity, kind, sid, name, domain []byte
	it := newObjectIter(props)
	for {
		k, v, ok := it.next()
		if !ok {
			break
		}
		switch {
		case keyEquals(k, recordSeverity):
			severity = v
		case keyEquals(k, recordEntityType):
			kind = v
		case keyEquals(k, recordSID):
			sid = v
		case keyEquals(k, recordName):
			name = v
		case keyEquals(k, recordDomain):
			domain = v
		}
	}
	h := Hints{Severity: hintString(severity)}
	if isUserEntity(kind) {
		var users userSet
		users.add(readMention(sid, domain, name, nil))
		h.User = users.one()
	}
	return h
}

// isUserEntity reports whether an entity type value is the string "User",
// in any ASCII case.
func isUserEntity(v []byte) bool {
	if len(v) < 2 || v[0] != '"' {
		return false
	}
	var buf [len(userEntity)]byte
	n := decodeInto(v[1:len(v)-1], buf[:])
	return n == len(buf) && asciiEqualFold(buf[:], userEntity)
}

// hintString decodes a string value of at most MaxHintBytes; anything
// else (absent, null, another kind, too long) is "".
func hintString(v []byte) string {
	s, ok := readHint(v)
	if !ok {
		return ""
	}
	return s
}

// readHint decodes a string value of at most MaxHintBytes. Absent, null
// and "" are "" and ok; another kind, or a longer string, is not ok.
func readHint(v []byte) (string, bool) {
	switch {
	case v == nil || v[0] == 'n':
		return "", true
	case v[0] != '"' || len(v) < 2:
		return "", false
	}
	raw := v[1 : len(v)-1]
	if len(raw) > 6*MaxHintBytes {
		return "", false // longer than MaxHintBytes even if every byte were an escape
	}
	var buf [MaxHintBytes]byte
	n := decodeInto(raw, buf[:])
	if n > len(buf) {
		return "", false
	}
	return string(buf[:n]), true
}

// A mention is one place where an alert names a user.
type mention struct {
	ref defender.UserRef // the SID, and a domain and name only as a pair
	// some says the place names someone (a field was set), even if ref
	// cannot tell whom.
	some bool
}

// readMention reads the raw values of one mention: sid, domain, name and
// others, a value naming the user in some way that is not compared (nil
// when none).
func readMention(sid, domain, name, others []byte) mention {
	s, okS := readHint(sid)
	d, okD := readHint(domain)
	n, okN := readHint(name)
	m := mention{some: !okS || !okD || !okN || s != "" || d != "" || n != "" || others != nil}
	if !okS || !okD || !okN {
		return m // unreadable: names someone, but who cannot be told
	}
	m.ref.SID = s
	if d != "" && n != "" {
		m.ref.Domain, m.ref.Name = d, n
	}
	return m
}

// userSet gathers an alert's mentions into users.
type userSet struct {
	users [maxUserGroups]defender.UserRef
	n     int
	bad   bool // several users, or one that cannot be told
}

// sameSID and sameName report whether a and b share a SID, or a
// domain\name, without regard to case.
func sameSID(a, b defender.UserRef) bool {
	return a.SID != "" && b.SID != "" && strings.EqualFold(a.SID, b.SID)
}

func sameName(a, b defender.UserRef) bool {
	return a.Name != "" && b.Name != "" && strings.EqualFold(a.Domain, b.Domain) && strings.EqualFold(a.Name, b.Name)
}

// add merges m with the users it agrees with. The users kept apart never
// agree with each other, so m merges with at most two of them (one by SID,
// one by name) and what is left stays apart: one pass is enough.
func (s *userSet) add(m mention) {
	if s.bad || !m.some {
		return
	}
	if !m.ref.Matchable() {
		s.bad = true
		return
	}
	merged, kept := m.ref, 0
	for _, u := range s.users[:s.n] {
		bySID, byName := sameSID(u, merged), sameName(u, merged)
		if !bySID && !byName {
			s.users[kept] = u
			kept++
			continue
		}
		// Agreeing on one, both set and different on the other: two users,
		// or a mention that is wrong. Either way, not one user to reuse.
		if u.SID != "" && merged.SID != "" && !bySID || u.Name != "" && merged.Name != "" && !byName {
			s.bad = true
			return
		}
		// What an earlier mention said stays as it was written.
		if u.SID != "" {
			merged.SID = u.SID
		}
		if u.Name != "" {
			merged.Domain, merged.Name = u.Domain, u.Name
		}
	}
	if kept == len(s.users) {
		s.bad = true
		return
	}
	s.users[kept] = merged
	s.n = kept + 1
}

// one returns the one user named, or the zero UserRef.
func (s *userSet) one() defender.UserRef {
	if s.bad || s.n != 1 {
		return defender.UserRef{}
	}
	return s.users[0]
}
