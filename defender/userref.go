package defender

import "strings"

// UserRef is the user an alert names of itself: a streaming-API record's
// AccountSid, AccountDomain and AccountName, or an alert object's
// relatedUser and User evidence. Any field may be empty.
//
// A ref is matched against an API answer, never trusted on its own: the
// cache reuses another alert's answer for this alert only when that answer
// is exactly the user the ref names (User.Is).
type UserRef struct {
	SID    string // "S-1-5-21-..."
	Domain string // "contoso"
	Name   string // "user1"
}

// IsZero reports whether r names nothing at all.
func (r UserRef) IsZero() bool { return r.SID == "" && r.Domain == "" && r.Name == "" }

// Matchable reports whether r can match an answer at all: it has a SID,
// or both a domain and a name. A ref that is not matchable matches no
// user.
func (r UserRef) Matchable() bool { return r.SID != "" || r.Domain != "" && r.Name != "" }

// Is reports whether u is exactly the user r names: its accountSid equals
// r's SID, or its id equals r's Domain\Name, both without regard to case
// (Unicode simple folding, as strings.EqualFold). Empty values never
// match: a user without an accountSid is matched by id alone, and a ref
// without a SID, or without both a domain and a name, only by the other.
// When both have a SID and the two differ, u is another account whatever
// the names say (an account deleted and made again under its old name has
// a new SID). A nil u matches nothing.
func (u *User) Is(r UserRef) bool {
	if u == nil {
		return false
	}
	if r.SID != "" && u.AccountSID != "" {
		return strings.EqualFold(u.AccountSID, r.SID)
	}
	return r.Domain != "" && r.Name != "" && u.ID != "" && strings.EqualFold(u.ID, r.Domain+`\`+r.Name)
}
