package demo

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
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
		sum := 0
		for _, k := range []string{"enriched", "not found", "unavailable", "failed", "skipped", "dead letters"} {
			sum += counts[k]
		}
		if sum != tt.events {
			t.Errorf("events %d (seed %d): the statuses add up to %d:\n%s", tt.events, tt.seed, sum, summary)
		}
	}
}
