package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/defender-enricher/defender-enricher/simulator"
)

// TestDemoStopsAtExactlyN: the demo prints exactly --events events, and its
// summary counts exactly those.
func TestDemoStopsAtExactlyN(t *testing.T) {
	for _, tt := range []struct {
		events int
		seed   uint64
	}{{1, 0}, {40, 0}, {40, 7}, {57, 11}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		var out bytes.Buffer
		err := Run(ctx, Options{Events: tt.events, Rate: 1000, Out: &out, Seed: tt.seed})
		cancel()
		if err != nil {
			t.Fatalf("events %d: %v\n%s", tt.events, err, out.String())
		}
		head, summary, ok := strings.Cut(out.String(), "\nsummary after ")
		if !ok {
			t.Fatalf("events %d: no summary:\n%s", tt.events, out.String())
		}
		_, stream, _ := strings.Cut(head, "\n\n")
		if n := strings.Count(strings.TrimSpace(stream), "\n") + 1; n != tt.events {
			t.Errorf("events %d (seed %d): %d event lines printed:\n%s", tt.events, tt.seed, n, stream)
		}
		counts := map[string]int{}
		for _, m := range regexp.MustCompile(`(?m)^  ([a-z ]+?) +(\d+)`).FindAllStringSubmatch(summary, -1) {
			counts[m[1]], _ = strconv.Atoi(m[2])
		}
		if counts["events"] != tt.events {
			t.Errorf("events %d (seed %d): the summary counts %d events:\n%s", tt.events, tt.seed, counts["events"], summary)
		}
		// Every count but these is one of a status: they add up to the
		// events, whatever statuses there are.
		sum := 0
		for k, n := range counts {
			switch k {
			case "input messages", "events", "updates", "cache hit ratio":
			default:
				sum += n
			}
		}
		if counts["enriched"] == 0 {
			t.Errorf("events %d (seed %d): nothing enriched:\n%s", tt.events, tt.seed, summary)
		}
		if sum != tt.events {
			t.Errorf("events %d (seed %d): the statuses add up to %d:\n%s", tt.events, tt.seed, sum, summary)
		}
	}
}

// TestDemoPublishesThePoolsUser: every user the demo publishes is the one
// the alert names: the pool's user for the alert id when answered by the
// API or the alert's cache, a user the event names when answered from the
// cache of a named user.
func TestDemoPublishesThePoolsUser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, Options{Events: 120, Rate: 1000, Out: &out, JSON: true}); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	pool := simulator.NewUserPool(poolSize, defaultSeed)
	statuses := map[string]int{}
	for line := range strings.Lines(out.String()) {
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var v struct {
			AlertID string          `json:"alertId"`
			Alert   json.RawMessage `json:"alert"`
			User    *struct {
				ID         string `json:"id"`
				AccountSid string `json:"accountSid"`
			} `json:"user"`
			Enrichment struct {
				Status string `json:"status"`
				Source string `json:"source"`
			} `json:"enrichment"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		statuses[v.Enrichment.Status]++
		u, ok := pool.UserFor(v.AlertID)
		switch v.Enrichment.Status {
		case "enriched":
			switch {
			case v.User == nil:
				t.Errorf("%s: enriched without a user", v.AlertID)
			case v.Enrichment.Source == "api" || v.Enrichment.Source == "cache":
				if !ok || v.User.ID != u.ID || v.User.AccountSid != u.AccountSid {
					t.Errorf("%s: user %+v from %s, the pool's user is %s %s", v.AlertID, *v.User, v.Enrichment.Source, u.ID, u.AccountSid)
				}
			default:
				if !bytes.Contains(v.Alert, []byte(`"`+v.User.AccountSid+`"`)) {
					t.Errorf("%s: user %+v from %s is not named by the event: %s", v.AlertID, *v.User, v.Enrichment.Source, v.Alert)
				}
			}
		case "not_found":
			if ok {
				t.Errorf("%s: not found, but the pool has %s for it", v.AlertID, u.ID)
			}
		}
	}
	if statuses["enriched"] == 0 || statuses["not_found"] == 0 {
		t.Errorf("statuses %v: the run shows too little\n%s", statuses, out.String())
	}
}

func TestIsUpdate(t *testing.T) {
	for value, want := range map[string]bool{
		`{"alertId":"a","enrichment":{"status":"enriched"}}`:                     false,
		`{"alertId":"a","update":null}`:                                          false,
		`{"alertId":"a","update":false}`:                                         false,
		`{"alertId":"a","update":{"of":{"status":"unavailable"}}}`:               true,
		`{"alertId":"a","update":true}`:                                          true,
		`not json`:                                                               false,
		`{"alertId":"a","alert":{"update":{"nested":"not the record's field"}}}`: false,
	} {
		if got := isUpdate([]byte(value)); got != want {
			t.Errorf("isUpdate(%s) = %v, want %v", value, got, want)
		}
	}
}

func outputRecord(status, source, user string, update bool) *kgo.Record {
	v := map[string]any{
		"schemaVersion": 1,
		"alertId":       "da637472900382838869_1364969609",
		"alert":         map[string]any{"title": "Suspicious PowerShell command line", "severity": "Medium"},
		"user":          nil,
		"enrichment":    map[string]any{"status": status, "source": source, "enrichedAt": "2026-11-29T21:32:06.615Z", "error": ""},
	}
	if user != "" {
		v["user"] = map[string]any{"id": user}
	}
	if update {
		v["update"] = map[string]any{"previous": map[string]any{"status": "unavailable"}}
	}
	b, _ := json.Marshal(v)
	return &kgo.Record{Topic: outputTopic, Value: b}
}

// TestDescribe: the event line names the source unless it is "api", and an
// update.
func TestDescribe(t *testing.T) {
	for _, tt := range []struct {
		rec        *kgo.Record
		want, miss string
	}{
		{outputRecord("enriched", "api", `contoso\jdoe`, false), `contoso\jdoe `, "(api"},
		{outputRecord("enriched", "cache", `contoso\jdoe`, false), `contoso\jdoe (cache) `, "update"},
		{outputRecord("enriched", "user_cache", `contoso\jdoe`, false), `contoso\jdoe (user_cache) `, "update"},
		{outputRecord("enriched", "some_new_source", `contoso\jdoe`, false), `contoso\jdoe (some_new_source) `, "update"},
		{outputRecord("enriched", "api", `contoso\jdoe`, true), `contoso\jdoe (update) `, "api"},
		{outputRecord("enriched", "user_cache", `contoso\jdoe`, true), `contoso\jdoe (user_cache, update) `, "api"},
		{outputRecord("not_found", "cache", "", false), `- (cache) `, "update"},
		{outputRecord("not_found", "api", "", false), ` - `, "api"},
	} {
		line := describe(tt.rec, readEnvelope)
		if !strings.Contains(line, tt.want) || strings.Contains(line, tt.miss) || !strings.HasPrefix(line, statusOf(tt.rec)) {
			t.Errorf("describe(%s) = %q, want %q in it and not %q", tt.rec.Value, line, tt.want, tt.miss)
		}
	}
}

func statusOf(r *kgo.Record) string {
	var v struct {
		Enrichment struct {
			Status string `json:"status"`
		} `json:"enrichment"`
	}
	_ = json.Unmarshal(r.Value, &v)
	return v.Enrichment.Status
}

// TestTally: the summary counts events by status and, within a status, by
// source; an unknown status is counted too, and updates on their own line.
func TestTally(t *testing.T) {
	tl := newTally()
	for _, r := range []*kgo.Record{
		outputRecord("enriched", "api", `contoso\a`, false),
		outputRecord("enriched", "cache", `contoso\a`, false),
		outputRecord("enriched", "user_cache", `contoso\b`, false),
		outputRecord("enriched", "user_cache", `contoso\b`, true),
		outputRecord("not_found", "api", "", false),
		outputRecord("unavailable", "", "", false),
		outputRecord("skipped", "", "", false),
		outputRecord("expired", "", "", false),
		{Topic: dlqTopic, Value: []byte("[]")},
	} {
		tl.add(r, readEnvelope)
	}
	var out bytes.Buffer
	tl.print(&out)
	want := `  events           9
  enriched         4 (api 1, cache 1, user_cache 2)
  not found        1 (api 1)
  unavailable      1
  failed           0
  skipped          1 (other Defender services)
  expired          1
  dead letters     1
  updates          1 (published again once enriched, counted in their status too)
`
	if out.String() != want {
		t.Errorf("summary\n%s\nwant\n%s", out.String(), want)
	}
	// Lookups: 5 (4 enriched, 1 not found); 2 of them from the API.
	if got := tl.withoutCall(); got != 3.0/5 {
		t.Errorf("withoutCall = %v, want 0.6", got)
	}
}
