package simulator

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// PoolUser is one user of a UserPool: the fields of the API's answer for
// an alert related to the user, and the identifiers alerts' evidence
// carries besides.
type PoolUser struct {
	ID            string // domain\name, the answer's id
	AccountName   string // the sAMAccountName, lowercase
	AccountDomain string // the NetBIOS domain name, lowercase
	AccountSid    string // S-1-5-21-{domain}-{RID}

	FirstSeen, LastSeen     time.Time // whole seconds, UTC
	MostPrevalentMachineID  string
	LeastPrevalentMachineID string // the same as MostPrevalentMachineID when LogOnMachinesCount is 1
	LogonTypes              string // "Network", "Interactive" or "RemoteInteractive"
	LogOnMachinesCount      int
	IsDomainAdmin           bool
	IsOnlyNetworkUser       bool

	// Not in the API's answer: what alert evidence names the user by
	// besides its account, name and SID.
	AADUserID         string // the Entra ID object id
	UserPrincipalName string
}

// Answer returns the user as Defender answers it, without the
// "@odata.context" the Server adds: the fields of the documented example,
// shaped as SyntheticUser's. The map is new on every call.
func (u PoolUser) Answer() map[string]any {
	return map[string]any{
		"id":                      u.ID,
		"accountName":             u.AccountName,
		"accountDomain":           u.AccountDomain,
		"accountSid":              u.AccountSid,
		"firstSeen":               u.FirstSeen.UTC().Format(time.RFC3339),
		"lastSeen":                u.LastSeen.UTC().Format(time.RFC3339),
		"mostPrevalentMachineId":  u.MostPrevalentMachineID,
		"leastPrevalentMachineId": u.LeastPrevalentMachineID,
		"logonTypes":              u.LogonTypes,
		"logOnMachinesCount":      u.LogOnMachinesCount,
		"isDomainAdmin":           u.IsDomainAdmin,
		"isOnlyNetworkUser":       u.IsOnlyNetworkUser,
	}
}

// UserPool is a fixed set of users and a deterministic assignment of alert
// ids to them, so that, as in a real tenant, one user is related to many
// alerts. The users are distinct: no two share an id, an account name, a
// SID, an Entra ID object id or a user principal name. They belong to up
// to three domains, each with a domain SID of its own.
//
// A UserPool never changes after NewUserPool: it is safe for concurrent
// use.
type UserPool struct {
	seed  uint64
	users []PoolUser
}

// noUserPercent is the share of alert ids UserFor finds no user for.
const noUserPercent = 5

// NewUserPool returns a pool of n users, at least 1, made from seed alone:
// the same n and seed always give the same users.
func NewUserPool(n int, seed uint64) *UserPool {
	n = max(n, 1)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	type domain struct{ name, sid string }
	names := poolDomains
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	domains := make([]domain, 3)
	for i := range domains {
		domains[i] = domain{names[i], fmt.Sprintf("S-1-5-21-%d-%d-%d", rng.Uint32(), rng.Uint32(), rng.Uint32())}
	}

	p := &UserPool{seed: seed, users: make([]PoolUser, 0, n)}
	taken := map[string]bool{}
	rid := 1103 + rng.IntN(500)
	for range n {
		// Most users in the first domain, as in a forest with a main one.
		d := domains[0]
		switch r := rng.IntN(10); {
		case r == 0:
			d = domains[2]
		case r < 3:
			d = domains[1]
		}
		given := poolGivenNames[rng.IntN(len(poolGivenNames))]
		base := given[:1] + poolSurnames[rng.IntN(len(poolSurnames))]
		name := base
		for k := 2; taken[name]; k++ {
			name = base + strconv.Itoa(k)
		}
		taken[name] = true

		firstSeen := time.Date(2019, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.IntN(1500*86400)) * time.Second)
		lastSeen := firstSeen.Add(time.Duration(rng.IntN(730*86400)) * time.Second)
		machines := 1 + rng.IntN(12)
		most := randomHex(rng, 20)
		least := most
		if machines > 1 {
			least = randomHex(rng, 20)
		}
		logonType := poolLogonTypes[rng.IntN(len(poolLogonTypes))]
		p.users = append(p.users, PoolUser{
			ID:                      d.name + `\` + name,
			AccountName:             name,
			AccountDomain:           d.name,
			AccountSid:              d.sid + "-" + strconv.Itoa(rid),
			FirstSeen:               firstSeen,
			LastSeen:                lastSeen,
			MostPrevalentMachineID:  most,
			LeastPrevalentMachineID: least,
			LogonTypes:              logonType,
			LogOnMachinesCount:      machines,
			IsDomainAdmin:           rng.IntN(12) == 0,
			IsOnlyNetworkUser:       logonType == "Network",
			AADUserID:               randomUUID(rng),
			UserPrincipalName:       name + "@" + d.name + ".com",
		})
		rid += 1 + rng.IntN(300)
	}
	return p
}

// Len returns the number of users in the pool.
func (p *UserPool) Len() int { return len(p.users) }

// At returns the i-th user, 0 <= i < Len(); it panics otherwise, as a
// slice does.
func (p *UserPool) At(i int) PoolUser { return p.users[i] }

// UserFor returns the user related to alertID, decided by a hash of the
// pool's seed and alertID alone: the same id always gets the same user,
// every user is about as likely, and one id in twenty (5%) has none, which
// Defender answers with a 404.
func (p *UserPool) UserFor(alertID string) (PoolUser, bool) {
	var seed [8]byte
	binary.BigEndian.PutUint64(seed[:], p.seed)
	h := sha256.Sum256(append(seed[:], alertID...))
	if binary.BigEndian.Uint64(h[:8])%100 < noUserPercent {
		return PoolUser{}, false
	}
	return p.users[binary.BigEndian.Uint64(h[8:16])%uint64(len(p.users))], true
}

// Users returns a function for Options.Users that answers UserFor's user,
// or a 404 when it has none.
func (p *UserPool) Users() func(alertID string) (map[string]any, bool) {
	return func(alertID string) (map[string]any, bool) {
		u, ok := p.UserFor(alertID)
		if !ok {
			return nil, false
		}
		return u.Answer(), true
	}
}

var (
	poolDomains    = [...]string{"contoso", "fabrikam", "northwind", "adatum", "woodgrove", "tailspin", "litware", "wingtip"}
	poolGivenNames = [...]string{"alex", "bianca", "chen", "dana", "emeka", "farah", "gustavo", "hana", "ivan", "jonas", "kiri", "lena", "malik", "nora", "oskar", "priya", "rosa", "sven", "tomas", "uma", "viktor", "wen", "yara", "zeynep"}
	poolSurnames   = [...]string{"adeyemi", "berg", "costa", "dubois", "eriksen", "fischer", "garcia", "haddad", "ito", "jensen", "kowalski", "lindqvist", "moreau", "nakamura", "okafor", "patel", "quinn", "rossi", "silva", "tanaka", "novak", "weber", "yilmaz", "zhou"}
	poolLogonTypes = [...]string{"Network", "Interactive", "RemoteInteractive"}
)

func randomHex(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return hex.EncodeToString(b)
}

func randomUUID(rng *rand.Rand) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], rng.Uint64())
	binary.BigEndian.PutUint64(b[8:], rng.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
