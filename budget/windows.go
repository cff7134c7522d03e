package budget

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// windowCollector reports, at scrape time, each window of a budget:
// enricher_budget_window_calls{window}, the calls the window counts now,
// and enricher_budget_window_limit{window}, the most it admits. The window
// label is the window's length as Limit.String writes it ("1m", "1h",
// "1m30s"). Windows of one length given more than once are one series:
// they count the same calls, and the tightest limit is the one that holds.
type windowCollector struct {
	labels []string        // the window label of each distinct length
	pers   []time.Duration // each distinct length, in the order of the limits
	limits []int           // the tightest limit of each
	// count returns the calls counted in each window of pers, or ok false
	// when they cannot be known now (the calls are then left out).
	count func(pers []time.Duration) (n []int, ok bool)
	calls *prometheus.Desc
	limit *prometheus.Desc
}

func newWindowCollector(limits Limits, count func(pers []time.Duration) ([]int, bool)) *windowCollector {
	c := &windowCollector{
		count: count,
		calls: prometheus.NewDesc("enricher_budget_window_calls",
			"Calls the call budget counts in the window now: running, or ended less than the window's length ago (a call counts until a window after its end). Compare with enricher_budget_window_limit.",
			[]string{"window"}, nil),
		limit: prometheus.NewDesc("enricher_budget_window_limit",
			"Most calls the call budget admits in the window (ENRICHER_DEFENDER_RATE_LIMITS); lookups of alerts below Medium stop short of it by the reserve (ENRICHER_DEFENDER_RESERVE).",
			[]string{"window"}, nil),
	}
	seen := map[time.Duration]int{}
	for _, l := range limits {
		if i, ok := seen[l.Per]; ok {
			c.limits[i] = min(c.limits[i], l.Calls)
			continue
		}
		seen[l.Per] = len(c.pers)
		c.labels = append(c.labels, formatDuration(l.Per))
		c.pers = append(c.pers, l.Per)
		c.limits = append(c.limits, l.Calls)
	}
	return c
}

func (c *windowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.calls
	ch <- c.limit
}

func (c *windowCollector) Collect(ch chan<- prometheus.Metric) {
	for i, l := range c.limits {
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(l), c.labels[i])
	}
	n, ok := c.count(c.pers)
	if !ok {
		return
	}
	for i, v := range n {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.GaugeValue, float64(v), c.labels[i])
	}
}

// windowCounts returns the calls each window of pers counts now, as
// nextLocked counts them: the running calls, and those that ended after
// now less the window. It takes the Window's lock for one pass over the
// calls of the longest window.
func (w *Window) windowCounts(pers []time.Duration) ([]int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.clock.Now()
	cuts := make([]time.Time, len(pers))
	for i, per := range pers {
		cuts[i] = now.Add(-per)
	}
	n := make([]int, len(pers))
	for _, c := range w.calls {
		for i, cut := range cuts {
			if c.running || c.at.After(cut) {
				n[i]++
			}
		}
	}
	return n, true
}

// scrapeTimeout bounds the read of a scrape: the budget's Timeout, and at
// most this, so that a stalled Redis holds /metrics for at most a second
// whatever ENRICHER_REDIS_TIMEOUT says.
const scrapeTimeout = time.Second

// windowCounts returns the calls each window of pers counts now in Redis,
// the fleet's, as acquireScript counts them (on Redis's clock, with the
// calls assumed for a lost state): one script, bounded by the budget's
// Timeout and at most scrapeTimeout. The read is a command like the
// budget's others: it sets enricher_budget_store_up, and one that fails
// counts in enricher_budget_store_errors_total and reports ok false. After
// Close it reads nothing and reports ok false: the client may be closed.
func (r *Redis) windowCounts(pers []time.Duration) ([]int, bool) {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, false
	}
	limits := make(map[time.Duration]int, len(pers))
	for _, l := range r.limits {
		if c, ok := limits[l.Per]; !ok || l.Calls < c {
			limits[l.Per] = l.Calls
		}
	}
	args := make([]any, 0, 1+2*len(pers))
	args = append(args, micros(r.opts.Lease))
	for _, per := range pers {
		args = append(args, micros(per), limits[per])
	}
	ctx, cancel := context.WithTimeout(context.Background(), min(r.opts.Timeout, scrapeTimeout))
	defer cancel()
	vals, err := windowsScript.Run(ctx, r.rdb, []string{r.keys[0], r.keys[3], r.keys[4]}, args...).Int64Slice()
	if err == nil && len(vals) != len(pers) {
		err = fmt.Errorf("budget: unexpected answer %v from the script", vals)
	}
	if err != nil {
		r.storeFailed(err)
		return nil, false
	}
	r.storeAnswered()
	n := make([]int, len(vals))
	for i, v := range vals {
		n[i] = int(v)
	}
	return n, true
}
