package defender_test

import (
	"testing"
	"time"

	"github.com/defender-enricher/defender-enricher/defender"
)

func TestParseUser(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		body     string
		wantErr  bool
		wantJSON string // "" to skip
		check    func(t *testing.T, u *defender.User)
	}{
		{
			name:     "values kept as sent, keys sorted, annotations dropped",
			body:     "{\"@odata.context\": \"https://x/$metadata\", \"note\": \"R&D <b>\\u00e9</b>\",\n \"accountName\": \"user1\", \"n\": 1.50, \"obj\": {\"z\": 1, \"y\": [1, 2]}}",
			wantJSON: `{"accountName":"user1","n":1.50,"note":"R&D <b>\u00e9</b>","obj":{"z":1,"y":[1,2]}}`,
			check: func(t *testing.T, u *defender.User) {
				if u.AccountName != "user1" {
					t.Errorf("AccountName %q", u.AccountName)
				}
			},
		},
		{name: "empty object", body: `{}`, wantJSON: `{}`},
		{name: "only annotations", body: `{"@odata.context":"x","@odata.etag":"y"}`, wantJSON: `{}`},
		{name: "property annotations", body: `{"logonTypes":"Network","logonTypes@odata.type":"#String","firstSeen@odata.type":"#DateTimeOffset"}`, wantJSON: `{"logonTypes":"Network"}`},
		{
			name: "timestamps in every shape Defender writes",
			body: `{"firstSeen":"2020-01-05T06:58:34.1234567Z","lastSeen":"2020-01-05T08:58:34+02:00"}`,
			check: func(t *testing.T, u *defender.User) {
				if u.FirstSeen == nil || !u.FirstSeen.Equal(time.Date(2020, 1, 5, 6, 58, 34, 123456700, time.UTC)) {
					t.Errorf("FirstSeen %v", u.FirstSeen)
				}
				if u.LastSeen == nil || !u.LastSeen.Equal(time.Date(2020, 1, 5, 6, 58, 34, 0, time.UTC)) || u.LastSeen.Location() != time.UTC {
					t.Errorf("LastSeen %v", u.LastSeen)
				}
			},
		},
		{
			name: "timestamps that are not",
			body: `{"firstSeen":"","lastSeen":12345}`,
			check: func(t *testing.T, u *defender.User) {
				if u.FirstSeen != nil || u.LastSeen != nil {
					t.Errorf("FirstSeen %v LastSeen %v, want nil", u.FirstSeen, u.LastSeen)
				}
			},
		},
		{
			name: "numbers and booleans",
			body: `{"logOnMachinesCount":12,"isDomainAdmin":true,"isOnlyNetworkUser":false}`,
			check: func(t *testing.T, u *defender.User) {
				if u.LogOnMachinesCount == nil || *u.LogOnMachinesCount != 12 || u.IsDomainAdmin == nil || !*u.IsDomainAdmin ||
					u.IsOnlyNetworkUser == nil || *u.IsOnlyNetworkUser {
					t.Errorf("got %v %v %v", u.LogOnMachinesCount, u.IsDomainAdmin, u.IsOnlyNetworkUser)
				}
			},
		},
		{name: "null", body: `null`, wantErr: true},
		{name: "array", body: `[{"id":"x"}]`, wantErr: true},
		{name: "string", body: `"x"`, wantErr: true},
		{name: "empty", body: ``, wantErr: true},
		{name: "truncated", body: `{"id":"x"`, wantErr: true},
		{name: "trailing garbage", body: `{"id":"x"} {}`, wantErr: true},
		{name: "boolean as string", body: `{"isDomainAdmin":"yes"}`, wantErr: true},
		{name: "fractional count", body: `{"logOnMachinesCount":1.5}`, wantErr: true},
		{name: "id as number", body: `{"id":5}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := defender.ParseUser([]byte(tt.body))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error, user %+v", u)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantJSON != "" && string(u.JSON) != tt.wantJSON {
				t.Errorf("JSON\n got %s\nwant %s", u.JSON, tt.wantJSON)
			}
			if tt.check != nil {
				tt.check(t, u)
			}
		})
	}
}
