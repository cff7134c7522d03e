package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/redistest"
)

// The Grafana dashboard and the Prometheus alert rules of deploy/: their
// structure, and that every metric their queries use is one a running
// connector exports.

var (
	dashboardFile = filepath.Join("..", "deploy", "grafana", "defender-enricher.json")
	rulesFile     = filepath.Join("..", "deploy", "prometheus", "alerts.yaml")
)

// dsVariable is the dashboard's data source variable: every panel and
// target queries through it, so that the dashboard imports into any
// Grafana, by hand or provisioned, and works with the Prometheus chosen.
const dsVariable = "${DS_PROMETHEUS}"

// dashboard is what the test reads of the dashboard JSON.
type dashboard struct {
	Title      string     `json:"title"`
	UID        string     `json:"uid"`
	Panels     []panel    `json:"panels"`
	Templating templating `json:"templating"`
}

type templating struct {
	List []struct {
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		Query      json.RawMessage `json:"query"`
		Datasource *datasource     `json:"datasource"`
	} `json:"list"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

// ruleFile is a Prometheus rule file, as far as the test reads it; fields
// outside it fail the decoding (a misspelt key is not ignored).
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record,omitempty"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	return d
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s is not a rule file: %v", rulesFile, err)
	}
	return rf
}

// allPanels returns the dashboard's panels, those inside rows included.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardExprs returns every query of the dashboard, by where it is:
// panel targets and template variables.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var s string
			if err := json.Unmarshal(v.Query, &s); err != nil {
				t.Fatalf("variable %s: query is neither an object nor a string: %s", v.Name, v.Query)
			}
			q.Query = s
		}
		// label_values(SELECTOR, LABEL): the selector is the query.
		sel := q.Query
		if rest, ok := strings.CutPrefix(sel, "label_values("); ok {
			if i := strings.LastIndex(rest, ","); i >= 0 {
				sel = rest[:i]
			}
		}
		exprs["variable "+v.Name] = sel
	}
	return exprs
}

// ruleExprs returns every expression of the rule file, by alert.
func ruleExprs(rf ruleFile) map[string]string {
	exprs := map[string]string{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			exprs["rule "+r.Alert+r.Record] = r.Expr
		}
	}
	return exprs
}

// promqlMetricNames returns the metric names an expression selects. It is
// a tokenizer of PromQL, not a parser: string literals, label matchers
// ({...}), ranges and subqueries ([...]), Grafana variables ($name,
// ${name}) and numbers are skipped; an identifier followed by "(" is a
// function, or, for by, without, on, ignoring, group_left and
// group_right, a list of labels, skipped too; keywords and aggregation
// operators are not names. Every other identifier is a metric name. It
// fails on unbalanced brackets or an unterminated string.
func promqlMetricNames(expr string) ([]string, error) {
	keywords := map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"sum": true, "min": true, "max": true, "avg": true, "count": true, "stddev": true, "stdvar": true,
		"topk": true, "bottomk": true, "quantile": true, "count_values": true, "group": true,
		"limitk": true, "limit_ratio": true, "inf": true, "nan": true,
	}
	labelLists := map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

	var names []string
	var stack []byte // open brackets of the expression itself: ( only
	i := 0
	// skipString moves i past the string literal starting at i.
	skipString := func() error {
		q := expr[i]
		for j := i + 1; j < len(expr); j++ {
			switch {
			case q != '`' && expr[j] == '\\':
				j++
			case expr[j] == q:
				i = j + 1
				return nil
			}
		}
		return fmt.Errorf("unterminated string at %d", i)
	}
	// skipGroup moves i past the bracketed group starting at i (open at
	// expr[i], closed by close), strings inside it included.
	skipGroup := func(close byte) error {
		open := expr[i]
		depth := 0
		for i < len(expr) {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				if err := skipString(); err != nil {
					return err
				}
				continue
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					i++
					return nil
				}
			}
			i++
		}
		return fmt.Errorf("unclosed %q", open)
	}
	for i < len(expr) {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			if err := skipString(); err != nil {
				return nil, err
			}
		case c == '{':
			if err := skipGroup('}'); err != nil {
				return nil, err
			}
		case c == '[':
			if err := skipGroup(']'); err != nil {
				return nil, err
			}
		case c == '}' || c == ']':
			return nil, fmt.Errorf("unopened %q at %d", c, i)
		case c == '(':
			stack = append(stack, c)
			i++
		case c == ')':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unopened ')' at %d", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case c == '$':
			i++
			if i < len(expr) && expr[i] == '{' {
				if err := skipGroup('}'); err != nil {
					return nil, err
				}
				continue
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(expr) && expr[i+1] >= '0' && expr[i+1] <= '9':
			// A number or a duration: 0.99, 1e3, 0x1f, 5m, 1h30m.
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
			word := expr[start:i]
			j := i
			for j < len(expr) && (expr[j] == ' ' || expr[j] == '\t' || expr[j] == '\n') {
				j++
			}
			followedByParen := j < len(expr) && expr[j] == '('
			switch {
			case labelLists[strings.ToLower(word)] && followedByParen:
				i = j
				if err := skipGroup(')'); err != nil {
					return nil, err
				}
			case followedByParen, keywords[strings.ToLower(word)]:
				// A function, or a keyword.
			default:
				names = append(names, word)
			}
		default:
			i++ // an operator
		}
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("%d unclosed '('", len(stack))
	}
	return names, nil
}

// TestObservabilityTokenizer: promqlMetricNames finds the metric names of
// the queries the dashboard and the rules write, and refuses broken ones.
func TestObservabilityTokenizer(t *testing.T) {
	tests := []struct {
		expr    string
		want    []string
		wantErr bool
	}{
		{expr: `up{job="defender-enricher"} == 0`, want: []string{"up"}},
		{expr: `sum by (status) (rate(enricher_events_total{job=~"$job", status!="enricher_fake"}[$__rate_interval]))`, want: []string{"enricher_events_total"}},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(enricher_event_latency_seconds_bucket[5m])))`, want: []string{"enricher_event_latency_seconds_bucket"}},
		{expr: `max by (w) (a) >= on (w) group_left (x) max by (w) (b) or sum without (p) (c{p!="d"}) > 0`, want: []string{"a", "b", "c"}},
		{expr: `deriv(sum(x)[15m:1m]) > 1e3 and y offset 5m`, want: []string{"x", "y"}},
		{expr: `1 - (sum(rate(a[1m])) - (sum(rate(b[1m])) or vector(0))) / sum(rate(a[1m]))`, want: []string{"a", "b", "a"}},
		{expr: `absent(up{job="x"})`, want: []string{"up"}},
		{expr: `label_values(enricher_events_total{namespace=~"$namespace"}`, wantErr: true},
		{expr: `sum(rate(a[5m])`, wantErr: true},
		{expr: `a{job="x}`, wantErr: true},
		{expr: `a]`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := promqlMetricNames(tt.expr)
		if (err != nil) != tt.wantErr {
			t.Errorf("promqlMetricNames(%q): error %v, want error %v", tt.expr, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !slices.Equal(got, tt.want) {
			t.Errorf("promqlMetricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// usedMetrics returns every metric name the dashboard and the rules use,
// with where each is used. A name that is neither the connector's
// (enricher_) nor up, the scrape's own, fails the test: it would be a typo
// or a function written without its parentheses.
func usedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	exprs := dashboardExprs(t, readDashboard(t))
	for where, e := range ruleExprs(readRules(t)) {
		exprs[where] = e
	}
	used := map[string][]string{}
	own := regexp.MustCompile(`^enricher_[a-z0-9_]+$`)
	for where, e := range exprs {
		names, err := promqlMetricNames(e)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, e)
			continue
		}
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, e)
		}
		for _, n := range names {
			if n != "up" && !own.MatchString(n) {
				t.Errorf("%s: %q is not a metric of the connector in %q", where, n, e)
				continue
			}
			if !slices.Contains(used[n], where) {
				used[n] = append(used[n], where)
			}
		}
	}
	return used
}

// TestDashboardIsValid: the dashboard is JSON Grafana imports, with a data
// source variable, unique panel ids, panels that fit the grid, and every
// target with its data source, a unique refId and a query.
func TestDashboardIsValid(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: want both", d.Title, d.UID)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != dsVariable) {
			t.Errorf("variable %s: data source %+v, want uid %s", v.Name, v.Datasource, dsVariable)
		}
	}
	if vars["DS_PROMETHEUS"] != "datasource" {
		t.Errorf("no data source variable DS_PROMETHEUS: variables %v", vars)
	}
	builtins := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	varRef := regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	ids := map[int]string{}
	targets := 0
	for _, p := range allPanels(d.Panels) {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID <= 0 {
			t.Errorf("%s: id %d, want a positive one", where, p.ID)
		}
		if other, dup := ids[p.ID]; dup {
			t.Errorf("%s: id %d is also panel %q's", where, p.ID, other)
		}
		ids[p.ID] = p.Title
		if p.Title == "" {
			t.Errorf("%s: no title", where)
		}
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v does not fit the 24 columns", where, g)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != dsVariable || p.Datasource.Type != "prometheus" {
			t.Errorf("%s: data source %+v, want prometheus %s", where, p.Datasource, dsVariable)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no target", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			targets++
			if tg.Datasource == nil || tg.Datasource.UID != dsVariable || tg.Datasource.Type != "prometheus" {
				t.Errorf("%s target %s: data source %+v, want prometheus %s", where, tg.RefID, tg.Datasource, dsVariable)
			}
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("%s: refId %q empty or used twice", where, tg.RefID)
			}
			refs[tg.RefID] = true
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("%s target %s: no expr", where, tg.RefID)
			}
			for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
				if _, ok := vars[m[1]]; !ok && !builtins[m[1]] {
					t.Errorf("%s target %s: variable $%s is not defined", where, tg.RefID, m[1])
				}
			}
		}
	}
	if targets == 0 {
		t.Fatal("the dashboard has no target")
	}
	// The panels the dashboard is for.
	used := usedMetrics(t)
	for _, want := range []string{
		"enricher_events_total", "enricher_consumer_lag_messages", "enricher_budget_window_calls",
		"enricher_budget_window_limit", "enricher_breaker_state", "enricher_defender_calls_total",
		"enricher_cache_lookups_total", "enricher_event_latency_seconds_bucket", "enricher_dead_letters_total",
		"enricher_deferred_waiting", "enricher_budget_store_up",
	} {
		found := false
		for _, where := range used[want] {
			found = found || strings.HasPrefix(where, "panel ")
		}
		if !found {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// promDuration is a Prometheus duration as rule files write it.
var promDuration = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)

// TestAlertRulesAreValid: the rule file has the structure Prometheus and
// the Prometheus Operator's PrometheusRule read, and every rule has an
// alert name, an expression, a for, a severity and the summary and
// description an operator acts on.
func TestAlertRulesAreValid(t *testing.T) {
	rf := readRules(t)
	if len(rf.Groups) == 0 {
		t.Fatal("no groups")
	}
	groups, alerts := map[string]bool{}, map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q empty or used twice", g.Name)
		}
		groups[g.Name] = true
		if len(g.Rules) == 0 {
			t.Errorf("group %s: no rules", g.Name)
		}
		for i, r := range g.Rules {
			where := fmt.Sprintf("group %s rule %d (%s)", g.Name, i, r.Alert)
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s: alert %q, record %q: want an alerting rule", where, r.Alert, r.Record)
			}
			if alerts[r.Alert] {
				t.Errorf("%s: alert name used twice", where)
			}
			alerts[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", where)
			}
			if !promDuration.MatchString(r.For) {
				t.Errorf("%s: for %q is not a duration such as 5m", where, r.For)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: labels.severity %q, want critical or warning", where, s)
			}
			for _, k := range []string{"summary", "description"} {
				a := strings.TrimSpace(r.Annotations[k])
				if a == "" {
					t.Errorf("%s: no annotations.%s", where, k)
				}
				if strings.Count(a, "{{") != strings.Count(a, "}}") {
					t.Errorf("%s: annotations.%s has unbalanced template braces: %q", where, k, a)
				}
			}
		}
	}
	for _, want := range []string{
		"DefenderEnricherDown", "DefenderEnricherAbsent", "DefenderEnricherNotReady", "DefenderEnricherLagGrowing",
		"DefenderEnricherBreakerOpen", "DefenderEnricherBudgetExhausted", "DefenderEnricherRedisDown",
		"DefenderEnricherDeadLetters", "DefenderEnricherCommitFailures",
	} {
		if !alerts[want] {
			t.Errorf("no rule %s", want)
		}
	}
	usedMetrics(t) // every expression tokenizes, with only known names
}

// families returns the metric families of a /metrics page by name, with
// their type.
func families(t *testing.T, page string) map[string]string {
	t.Helper()
	types := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(page))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			types[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return types
}

// exported reports whether a query's name selects series of the page's
// families: a counter or gauge by its name, a histogram by its _bucket,
// _sum or _count series (never by its bare name, which has none).
func exported(types map[string]string, name string) bool {
	switch types[name] {
	case "":
	case "histogram", "summary":
		return false
	default:
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			switch types[base] {
			case "histogram":
				return true
			case "summary":
				return suffix != "_bucket"
			}
		}
	}
	return false
}

// sample returns the value of the series of the page written exactly as
// series (name and labels in the order the page writes them), or false.
func sample(page, series string) (float64, bool) {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	return v, err == nil
}

func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	code, body := httpGet(t, "http://"+addr+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	return body
}

// TestObservabilityMetricsExist: every metric the dashboard and the alert
// rules use is on /metrics of a running connector, once events of every
// status, a dead letter and a deferred event's update have flowed: one
// connector with its own budget and a state file, one with the budget and
// cache shared in Redis (the metrics of the store exist only there).
func TestObservabilityMetricsExist(t *testing.T) {
	used := usedMetrics(t)
	kafkatest.Each(t, func(t *testing.T, c *kafkatest.Cluster) {
		pages := map[string]string{}

		t.Run("own budget", func(t *testing.T) {
			e := newEnv(t, c, 1)
			tl := newTail(t, e)
			a, stop := startConnector(t, e, map[string]string{
				"ENRICHER_DEFENDER_RATE_LIMITS": "100000/1m,100000/1h",
				"ENRICHER_BUDGET_STATE_FILE":    filepath.Join(t.TempDir(), "budget.state"),
				"ENRICHER_MAX_ENRICH_WAIT":      "2s",
				"ENRICHER_BREAKER_FAILURES":     "1",
				"ENRICHER_BREAKER_TIMEOUT":      "1s",
			})
			// Before any event: the vectors no event has touched yet are
			// not on the page. Logged, for those whose labels are known in
			// advance and could start at zero.
			atStart := families(t, scrapeMetrics(t, a.HTTPAddr()))
			var notYet []string
			for n := range used {
				if !exported(atStart, n) {
					notYet = append(notYet, n)
				}
			}
			sort.Strings(notYet)
			t.Logf("used by the dashboard or the rules, not on /metrics before the first event: %v", notYet)

			status := func(o output) string { return o.Env.Enrichment.Status }
			wantStatus := func(evs []event, want string) {
				t.Helper()
				outs, _ := tl.waitCovered(60*time.Second, evs)
				got := byMarker(outs)
				for _, ev := range evs {
					if s := status(got[ev.Marker]); s != want {
						t.Fatalf("%s: status %q, want %q", ev.AlertID, s, want)
					}
				}
			}
			wantStatus(produceAlerts(t, c, e.in, 3), "enriched")
			missing := newAlertIDs(1)[0]
			e.sim.SetNotFound(missing)
			wantStatus(produceAlerts(t, c, e.in, 1, withIDs(missing)), "not_found")
			office := newAlertIDs(1)[0]
			mk := newMarker()
			rec := alertInfoRecord(office, mk, "Microsoft Defender for Office 365")
			wantStatus(produce(t, c, e.in, message{Key: []byte(office), Value: envelopeOf(rec), Partition: kafkatest.ByKey,
				Events: []event{{Marker: mk, AlertID: office, Record: 0, Alert: rec}}}), "skipped")
			mk = newMarker()
			bad := []byte(`{"e2eMarker":"` + mk + `","title":"an alert without its id"}`)
			dead := produce(t, c, e.in, message{Value: bad, Partition: kafkatest.ByKey, Events: []event{{Marker: mk, Record: -1, Alert: bad}}})
			_, dls := tl.waitCovered(60*time.Second, dead)
			if !slices.ContainsFunc(dls, func(d deadLetter) bool { return d.id() == dead[0].id() }) {
				t.Fatal("the alert without its id is not a dead letter")
			}
			e.sim.SetForbidden(true)
			wantStatus(produceAlerts(t, c, e.in, 1), "failed")
			e.sim.SetForbidden(false)

			// Unavailable: Defender answers 503 and the breaker opens after
			// one failure; alerts go out unavailable, deferred to the retry
			// topic, and are updated once Defender is back.
			e.sim.SetOutage(http.StatusServiceUnavailable)
			var unavailable bool
			for try := 0; try < 20 && !unavailable; try++ {
				evs := produceAlerts(t, c, e.in, 1)
				outs, _ := tl.waitCovered(60*time.Second, evs)
				unavailable = status(byMarker(outs)[evs[0].Marker]) == "unavailable"
			}
			if !unavailable {
				t.Fatal("no alert went out unavailable during the outage")
			}
			waitUntil(t, 60*time.Second, "a deferred event", func() bool {
				return metricValue(t, a.Registry(), "enricher_deferred_total", nil) >= 1
			})
			e.sim.SetOutage(0)
			waitUntil(t, 120*time.Second, "the deferred event's update", func() bool {
				return metricValue(t, a.Registry(), "enricher_updates_total", nil) >= 1
			})
			waitUntil(t, 60*time.Second, "the breaker to close", func() bool {
				return metricValue(t, a.Registry(), "enricher_breaker_state", nil) == 0
			})

			// Every call of this run was granted less than an hour ago: the
			// hour counts them all, the calls granted before the scrape and
			// at most those granted by the end of it.
			before := metricValue(t, a.Registry(), "enricher_budget_granted_total", nil)
			page := scrapeMetrics(t, a.HTTPAddr())
			after := metricValue(t, a.Registry(), "enricher_budget_granted_total", nil)
			if v, ok := sample(page, `enricher_budget_window_calls{window="1h"}`); !ok || v < max(before, 1) || v > after {
				t.Errorf("/metrics: enricher_budget_window_calls{window=\"1h\"} = %v (present %v), want the calls granted, %v to %v", v, ok, before, after)
			}
			if v, ok := sample(page, `enricher_budget_window_calls{window="1m"}`); !ok || v > after {
				t.Errorf("/metrics: enricher_budget_window_calls{window=\"1m\"} = %v (present %v), want at most the %v calls granted", v, ok, after)
			}
			for _, want := range []struct {
				series string
				value  float64
			}{
				{`enricher_budget_window_limit{window="1m"}`, 100000},
				{`enricher_budget_window_limit{window="1h"}`, 100000},
			} {
				if v, ok := sample(page, want.series); !ok || v != want.value {
					t.Errorf("/metrics: %s = %v (present %v), want %v", want.series, v, ok, want.value)
				}
			}
			pages["own budget"] = page
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("Redis", func(t *testing.T) {
			s := redistest.NewMini(t)
			e := newEnv(t, c, 1)
			tl := newTail(t, e)
			a, stop := startConnector(t, e, map[string]string{"ENRICHER_REDIS_URL": s.URL()})
			tl.waitCovered(60*time.Second, produceAlerts(t, c, e.in, 2))
			page := scrapeMetrics(t, a.HTTPAddr())
			if v, ok := sample(page, "enricher_budget_store_up"); !ok || v != 1 {
				t.Errorf("/metrics: enricher_budget_store_up = %v (present %v), want 1", v, ok)
			}
			if v, ok := sample(page, `enricher_budget_window_calls{window="1m"}`); !ok || v < 1 {
				t.Errorf("/metrics: enricher_budget_window_calls{window=\"1m\"} = %v (present %v), want the fleet's calls, at least 1", v, ok)
			}
			pages["Redis"] = page
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})

		if len(pages) != 2 {
			t.Fatal("a run did not reach its scrape")
		}
		types := map[string]map[string]string{}
		for run, page := range pages {
			types[run] = families(t, page)
		}
		names := make([]string, 0, len(used))
		for n := range used {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if n == "up" {
				continue // the scrape's own, not the connector's
			}
			var in []string
			for run, ty := range types {
				if exported(ty, n) {
					in = append(in, run)
				}
			}
			if len(in) == 0 {
				sort.Strings(used[n])
				t.Errorf("%s is on /metrics of neither run; used by %s", n, strings.Join(used[n], "; "))
			}
		}
	})
}
