package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/defender-enricher/defender-enricher/kafkatest"
	"github.com/defender-enricher/defender-enricher/schemas"
)

// event is one input event: a whole message, or one record of a
// streaming-API envelope.
type event struct {
	// Marker is unique to the event and sits in its JSON as "e2eMarker",
	// so that its output or dead letter can be found whatever became of
	// the rest; "" for input that cannot carry one (not JSON, empty).
	Marker  string
	AlertID string // the valid alert id, "" for input that has none
	// Record is the index within an envelope, -1 for a whole message.
	Record int
	// Alert is the object or record as the output must carry it.
	Alert []byte

	// Filled in by produce.
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafkatest.Header
	Produced  time.Time
}

// id is the event's identity in outputs and dead letters: its marker, or
// where it came from when it has none.
func (ev event) id() string {
	if ev.Marker != "" {
		return ev.Marker
	}
	return positionKey(ev.Partition, ev.Offset, ev.Record)
}

func positionKey(partition int32, offset int64, record int) string {
	return fmt.Sprintf("@%d/%d/%d", partition, offset, record)
}

// message is one input message and the events it carries.
type message struct {
	Key       []byte
	Value     []byte
	Headers   []kafkatest.Header
	Partition int32 // kafkatest.ByKey: by key, as the Java producer does
	Events    []event
}

var markerSeq atomic.Int64

// newMarker returns a marker unique within the test binary's run.
func newMarker() string { return "m" + strconv.FormatInt(markerSeq.Add(1), 10) }

// newAlertIDs returns n fresh alert ids in the shape of real ones
// (da637472900382838869_1364969609), unique within the run.
func newAlertIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		seq := markerSeq.Add(1)
		ids[i] = fmt.Sprintf("da6374729%011d_%d", seq, -(1_000_000_000 + seq%1_000_000_000))
	}
	return ids
}

// alertObject returns an alerts API object (form 1) for id. It carries what
// a byte-for-byte comparison would catch a re-encoder changing: a 20-digit
// integer, a float with trailing zeros, escapes, non-ASCII text, nulls,
// nesting and irregular spacing.
func alertObject(id, marker string) []byte {
	return fmt.Appendf(nil, `{"id": %q,  "e2eMarker":%q, "incidentId": 12345678901234567890,
  "score": 1.50, "ratio":-0.0e0, "severity":"High", "status" : "New", "classification": null,
  "title": "Suspicious \"PowerShell\" \u00e9\u2028 command line", "description":"Ex\u00e9cution de c:\\windows\\temp\\x.ps1 – ✓",
  "machineId":"111e6dd8c833c8a052ea231ec1b19adaf497b625", "mitreTechniques":["T1059.001"],
  "evidence":[{"entityType":"User","accountName":"user1","domainName":"CONTOSO","userSid":"S-1-5-21-1","aadUserId":null,"evidenceCreationTime":"2026-11-27T10:00:00.1234567Z"}],
  "comments":[], "nested":{"a":{"b":{"c":[1,2,{"d":true}]}}}}`, id, marker)
}

// alertInfoRecord returns a streaming-API AlertInfo record (form 2).
func alertInfoRecord(id, marker, serviceSource string) []byte {
	return fmt.Appendf(nil, `{"time":"2026-11-27T10:00:00.0000000Z","tenantId":"8c3f5d2e-6b1a-4f7e-9d0c-2a4b6e8f1c3d","operationName":"Publish","category":"AdvancedHunting-AlertInfo","properties":{"Timestamp":"2026-11-27T09:59:58.1234567Z","AlertId":%q,"e2eMarker":%q,"Title":"Mimikatz credential theft tool","Category":"CredentialAccess","Severity":"High","ServiceSource":%q,"DetectionSource":"EDR","AttackTechniques":"[\"T1003.001\"]","Count": 98765432109876543210}}`,
		id, marker, serviceSource)
}

// alertEvidenceRecord returns a streaming-API AlertEvidence record.
func alertEvidenceRecord(id, marker string) []byte {
	return fmt.Appendf(nil, `{ "time": "2026-11-27T10:00:00.0000000Z", "category": "AdvancedHunting-AlertEvidence", "properties": { "AlertId": %q, "e2eMarker": %q, "ServiceSource": "Microsoft Defender for Endpoint", "EntityType": "User", "EvidenceRole": "Impacted", "AccountName": "jdoe", "AccountSid": "S-1-5-21-1004336348-1177238915-682003330-512", "AccountObjectId": null } }`,
		id, marker)
}

// envelopeOf wraps records in a streaming-API envelope.
func envelopeOf(records ...[]byte) []byte {
	return append(append([]byte(`{"records": [`), bytes.Join(records, []byte(", "))...), "]}"...)
}

// alertMessage is a form-1 message for id with a fresh marker, keyed by
// the alert id.
func alertMessage(id string, partition int32, headers ...kafkatest.Header) message {
	m := newMarker()
	v := alertObject(id, m)
	return message{Key: []byte(id), Value: v, Headers: headers, Partition: partition,
		Events: []event{{Marker: m, AlertID: id, Record: -1, Alert: v}}}
}

// produce writes msgs and returns their events with where they landed.
func produce(t testing.TB, c *kafkatest.Cluster, topic string, msgs ...message) []event {
	t.Helper()
	recs := make([]kafkatest.Record, len(msgs))
	for i, m := range msgs {
		recs[i] = kafkatest.Record{Key: m.Key, Value: m.Value, Headers: m.Headers, Partition: m.Partition}
	}
	now := time.Now()
	pos := c.Produce(t, topic, recs...)
	var evs []event
	for i, m := range msgs {
		for _, ev := range m.Events {
			ev.Partition, ev.Offset = pos[i].Partition, pos[i].Offset
			ev.Key, ev.Value, ev.Headers, ev.Produced = m.Key, m.Value, m.Headers, now
			evs = append(evs, ev)
		}
	}
	return evs
}

// alertOpts shape produceAlerts' stream.
type alertOpts struct {
	ids       []string
	partition int32
	headers   []kafkatest.Header
}

type alertOpt func(*alertOpts)

// withIDs makes the stream cycle through ids instead of 50 fresh ones.
func withIDs(ids ...string) alertOpt { return func(o *alertOpts) { o.ids = ids } }

// onPartition writes every message to partition p instead of by key.
func onPartition(p int32) alertOpt { return func(o *alertOpts) { o.partition = p } }

// withHeaders adds headers to every message.
func withHeaders(h ...kafkatest.Header) alertOpt { return func(o *alertOpts) { o.headers = h } }

// produceAlerts writes n form-1 alerts, each with a fresh marker, keyed by
// alert id and partitioned by key unless onPartition says otherwise, and
// returns their events in the order written.
func produceAlerts(t testing.TB, c *kafkatest.Cluster, topic string, n int, opts ...alertOpt) []event {
	t.Helper()
	o := alertOpts{partition: kafkatest.ByKey}
	for _, f := range opts {
		f(&o)
	}
	if len(o.ids) == 0 {
		o.ids = newAlertIDs(50)
	}
	msgs := make([]message, n)
	for i := range msgs {
		msgs[i] = alertMessage(o.ids[i%len(o.ids)], o.partition, o.headers...)
	}
	return produce(t, c, topic, msgs...)
}

// envelope is the decoded v1 output envelope, alert and user kept raw.
type envelope struct {
	SchemaVersion int             `json:"schemaVersion"`
	AlertID       string          `json:"alertId"`
	Alert         json.RawMessage `json:"alert"`
	User          json.RawMessage `json:"user"`
	Enrichment    struct {
		Status     string `json:"status"`
		Source     string `json:"source"`
		EnrichedAt string `json:"enrichedAt"`
		Error      string `json:"error"`
	} `json:"enrichment"`
	Origin struct {
		Topic     string `json:"topic"`
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
	} `json:"origin"`
	// Update is set on an update of an event published unavailable.
	Update *struct {
		PreviousStatus     string `json:"previousStatus"`
		PreviousEnrichedAt string `json:"previousEnrichedAt"`
	} `json:"update"`
}

// output is one record of the output topic.
type output struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafkatest.Header
	Seen      time.Time // when the tail read it
	Env       envelope
	DecodeErr error
	Marker    string
}

// EnrichedAt parses the envelope's enrichedAt.
func (o output) EnrichedAt() time.Time {
	at, _ := time.Parse("2006-01-02T15:04:05.000Z", o.Env.Enrichment.EnrichedAt)
	return at
}

// id matches event.id.
func (o output) id() string {
	if o.Marker != "" {
		return o.Marker
	}
	return positionKey(o.Env.Origin.Partition, o.Env.Origin.Offset, -1)
}

// deadLetter is one record of the dead-letter topic, its error headers
// read out.
type deadLetter struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   []kafkatest.Header
	Seen      time.Time

	Reason, Message string
	Topic           string
	FromPartition   int32
	FromOffset      int64
	Record          int // -1 when the header is absent
	Marker          string
}

func (d deadLetter) id() string {
	if d.Marker != "" {
		return d.Marker
	}
	return positionKey(d.FromPartition, d.FromOffset, d.Record)
}

// header returns the value of the last header named key, and whether
// there is one.
func header(hs []kafkatest.Header, key string) (string, bool) {
	v, ok := "", false
	for _, h := range hs {
		if h.Key == key {
			v, ok = string(h.Value), true
		}
	}
	return v, ok
}

var markerRE = regexp.MustCompile(`"e2eMarker"\s*:\s*"([A-Za-z0-9_-]+)"`)

func markerOf(b []byte) string {
	if m := markerRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

func decodeOutput(r *kgo.Record, seen time.Time) output {
	o := output{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: headersOf(r), Seen: seen}
	dec := json.NewDecoder(bytes.NewReader(r.Value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o.Env); err != nil {
		o.DecodeErr = err
	} else if dec.More() {
		o.DecodeErr = errors.New("data after the envelope")
	}
	o.Marker = markerOf(o.Env.Alert)
	return o
}

func decodeDeadLetter(r *kgo.Record, seen time.Time) deadLetter {
	d := deadLetter{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: headersOf(r), Seen: seen, Record: -1}
	d.Reason, _ = header(d.Headers, schemas.HeaderReason)
	d.Message, _ = header(d.Headers, schemas.HeaderMessage)
	d.Topic, _ = header(d.Headers, schemas.HeaderTopic)
	if v, ok := header(d.Headers, schemas.HeaderPartition); ok {
		p, _ := strconv.ParseInt(v, 10, 32)
		d.FromPartition = int32(p)
	}
	if v, ok := header(d.Headers, schemas.HeaderOffset); ok {
		d.FromOffset, _ = strconv.ParseInt(v, 10, 64)
	}
	if v, ok := header(d.Headers, schemas.HeaderRecord); ok {
		d.Record, _ = strconv.Atoi(v)
	}
	d.Marker = markerOf(r.Value)
	return d
}

func headersOf(r *kgo.Record) []kafkatest.Header {
	var hs []kafkatest.Header
	for _, h := range r.Headers {
		hs = append(hs, kafkatest.Header{Key: h.Key, Value: h.Value})
	}
	return hs
}

// tail reads the output and dead-letter topics from their start, without a
// consumer group, for as long as the test runs, and lets the test wait for
// what it expects to appear.
type tail struct {
	t         testing.TB
	cl        *kgo.Client
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex
	outs    []output
	dls     []deadLetter
	changed chan struct{} // closed and replaced whenever records arrive
	err     error         // the last fetch error, for timeout messages
}

// newTail starts reading e's output and dead-letter topics; it stops at
// cleanup.
func newTail(t testing.TB, e *env) *tail {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(e.cluster.Brokers()...),
		kgo.ConsumeTopics(e.out, e.dlq),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.FetchMaxPartitionBytes(8<<20),
		kgo.MetadataMinAge(100*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("tail: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tl := &tail{t: t, cl: cl, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	go tl.run(ctx, e.out, e.dlq)
	t.Cleanup(tl.close)
	return tl
}

func (tl *tail) run(ctx context.Context, out, dlq string) {
	defer close(tl.done)
	for ctx.Err() == nil {
		fetches := tl.cl.PollFetches(ctx)
		now := time.Now()
		var outs []output
		var dls []deadLetter
		var ferr error
		fetches.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.Canceled) {
				ferr = err
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			switch r.Topic {
			case out:
				outs = append(outs, decodeOutput(r, now))
			case dlq:
				dls = append(dls, decodeDeadLetter(r, now))
			}
		})
		tl.mu.Lock()
		if ferr != nil {
			tl.err = ferr
		}
		if len(outs)+len(dls) > 0 {
			tl.outs = append(tl.outs, outs...)
			tl.dls = append(tl.dls, dls...)
			close(tl.changed)
			tl.changed = make(chan struct{})
		}
		tl.mu.Unlock()
	}
}

// close stops reading; it may be called more than once.
func (tl *tail) close() {
	tl.closeOnce.Do(func() {
		tl.cancel()
		<-tl.done
		tl.cl.Close()
	})
}

// snapshot returns copies of what was read so far.
func (tl *tail) snapshot() ([]output, []deadLetter) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.outs), slices.Clone(tl.dls)
}

// waitFor returns what was read once cond holds for it, or fails the test
// with what after timeout. cond sees the records in the order read (per
// partition, offset order) and must not keep the slices.
func (tl *tail) waitFor(timeout time.Duration, what string, cond func(outs []output, dls []deadLetter) bool) ([]output, []deadLetter) {
	tl.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		tl.mu.Lock()
		outs, dls, changed, ferr := tl.outs, tl.dls, tl.changed, tl.err
		ok := cond(outs, dls)
		tl.mu.Unlock()
		if ok {
			return slices.Clone(outs), slices.Clone(dls)
		}
		select {
		case <-changed:
		case <-deadline.C:
			msg := fmt.Sprintf("timed out after %v waiting for %s: %d outputs and %d dead letters read", timeout, what, len(outs), len(dls))
			if ferr != nil {
				msg += fmt.Sprintf(" (last fetch error: %v)", ferr)
			}
			tl.t.Fatal(msg)
		}
	}
}

// waitCount waits for at least nOut outputs and nDLQ dead letters.
func (tl *tail) waitCount(timeout time.Duration, nOut, nDLQ int) ([]output, []deadLetter) {
	tl.t.Helper()
	return tl.waitFor(timeout, fmt.Sprintf("%d outputs and %d dead letters", nOut, nDLQ), func(outs []output, dls []deadLetter) bool {
		return len(outs) >= nOut && len(dls) >= nDLQ
	})
}

// waitCovered waits until every input event has come out at least once,
// as an output or a dead letter.
func (tl *tail) waitCovered(timeout time.Duration, inputs []event) ([]output, []deadLetter) {
	tl.t.Helper()
	want := make(map[string]bool, len(inputs))
	for _, ev := range inputs {
		want[ev.id()] = true
	}
	seen := make(map[string]bool, len(inputs))
	var no, nd int // records already looked at
	return tl.waitFor(timeout, fmt.Sprintf("all %d input events to come out", len(inputs)), func(outs []output, dls []deadLetter) bool {
		for _, o := range outs[no:] {
			if want[o.id()] {
				seen[o.id()] = true
			}
		}
		for _, d := range dls[nd:] {
			if want[d.id()] {
				seen[d.id()] = true
			}
		}
		no, nd = len(outs), len(dls)
		return len(seen) == len(want)
	})
}

// readOutputs reads e's output and dead-letter topics from the start until
// it has at least nOut outputs and nDLQ dead letters, decoded, or fails the
// test after timeout.
func readOutputs(t testing.TB, e *env, nOut, nDLQ int, timeout time.Duration) ([]output, []deadLetter) {
	t.Helper()
	tl := newTail(t, e)
	defer tl.close()
	return tl.waitCount(timeout, nOut, nDLQ)
}

// lossReport is what verifyNoLoss found.
type lossReport struct {
	Events     int // input events
	Missing    int // input events with neither output nor dead letter
	Duplicates int // outputs and dead letters beyond the first per event
	Strays     int // outputs and dead letters of no input event
}

// verifyNoLoss checks that every input event appears in the outputs or the
// dead letters at least once, that every output decodes and matches the
// output schema, and that nothing came out that was not put in. Duplicates
// are allowed (delivery is at least once) and counted; the report is
// logged.
func verifyNoLoss(t testing.TB, inputs []event, outs []output, dls []deadLetter) lossReport {
	t.Helper()
	seen := make(map[string]int, len(inputs))
	r := lossReport{Events: len(inputs)}
	want := make(map[string]bool, len(inputs))
	for _, ev := range inputs {
		if want[ev.id()] {
			t.Fatalf("verifyNoLoss: two input events share the identity %s", ev.id())
		}
		want[ev.id()] = true
	}
	var strays []string
	for _, o := range outs {
		if o.DecodeErr != nil {
			t.Errorf("output %d/%d does not decode: %v\n%s", o.Partition, o.Offset, o.DecodeErr, o.Value)
			continue
		}
		if err := validateOutput(o.Value); err != nil {
			t.Errorf("output %d/%d does not match %s: %v\n%s", o.Partition, o.Offset, schemas.OutputSchema, err, o.Value)
		}
		seen[o.id()]++
	}
	for _, d := range dls {
		seen[d.id()]++
	}
	for id, n := range seen {
		if !want[id] {
			r.Strays += n
			strays = append(strays, id)
		}
	}
	var missing []string
	for _, ev := range inputs {
		n := seen[ev.id()]
		if n == 0 {
			r.Missing++
			missing = append(missing, fmt.Sprintf("%s (partition %d offset %d record %d)", ev.id(), ev.Partition, ev.Offset, ev.Record))
			continue
		}
		r.Duplicates += n - 1
	}
	t.Logf("no-loss check: %d input events, %d outputs, %d dead letters, %d missing, %d duplicates, %d strays",
		r.Events, len(outs), len(dls), r.Missing, r.Duplicates, r.Strays)
	if r.Missing > 0 {
		t.Errorf("%d of %d input events never came out, first: %s", r.Missing, r.Events, strings.Join(missing[:min(len(missing), 10)], ", "))
	}
	if r.Strays > 0 {
		slices.Sort(strays)
		t.Errorf("%d records came out that no input event explains, first: %s", r.Strays, strings.Join(strays[:min(len(strays), 10)], ", "))
	}
	return r
}

var outputSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, name := range []string{schemas.OutputSchema, schemas.UserSchema} {
		b, err := fs.ReadFile(schemas.FS, name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if err := c.AddResource(schemas.SchemaBaseURI+name, doc); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return c.Compile(schemas.SchemaBaseURI + schemas.OutputSchema)
})

// validateOutput checks one output record's value against
// output.v1.schema.json.
func validateOutput(value []byte) error {
	sch, err := outputSchema()
	if err != nil {
		return fmt.Errorf("compiling the schema: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	return sch.Validate(doc)
}

// byMarker indexes outputs by marker; a marker seen twice keeps the first.
func byMarker(outs []output) map[string]output {
	m := make(map[string]output, len(outs))
	for _, o := range outs {
		if _, ok := m[o.Marker]; !ok && o.Marker != "" {
			m[o.Marker] = o
		}
	}
	return m
}

// produceStream writes n alerts in batches of batch every pace, from the
// test's goroutine, calling after (when not nil) with the number of events
// written so far after each batch, so that a test can stop, kill or start
// connectors mid-stream. It returns every event written, in order.
func produceStream(t testing.TB, c *kafkatest.Cluster, topic string, n, batch int, pace time.Duration, after func(written int), opts ...alertOpt) []event {
	t.Helper()
	tick := time.NewTicker(pace)
	defer tick.Stop()
	var all []event
	for len(all) < n {
		if len(all) > 0 {
			<-tick.C
		}
		all = append(all, produceAlerts(t, c, topic, min(batch, n-len(all)), opts...)...)
		if after != nil {
			after(len(all))
		}
	}
	return all
}

// endOffsets returns, per partition, one past the newest input offset:
// what a group's committed offsets must reach once everything is done.
func endOffsets(inputs []event) map[int32]int64 {
	end := map[int32]int64{}
	for _, ev := range inputs {
		end[ev.Partition] = max(end[ev.Partition], ev.Offset+1)
	}
	return end
}

// checkCommitted asserts that the group's committed offsets on e's input
// topic cover every input.
func checkCommitted(t testing.TB, e *env, inputs []event) {
	t.Helper()
	got := e.cluster.Committed(t, e.group, e.in)
	for p, end := range endOffsets(inputs) {
		if got[p] < end {
			t.Errorf("partition %d: committed offset %d, want %d (everything produced)", p, got[p], end)
		}
	}
}

// errorRecorder is a testing.TB that keeps errors instead of failing, to
// check that a verifier fails when it should.
type errorRecorder struct {
	testing.TB
	errors []string
}

func (r *errorRecorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *errorRecorder) Logf(string, ...any) {}

// verifyNoLoss itself: a lost event, a duplicate, a stray and an output
// off the schema are each reported. It needs no cluster.
func TestVerifyNoLoss(t *testing.T) {
	id := newAlertIDs(1)[0]
	in := func(marker string, offset int64) event {
		return event{Marker: marker, AlertID: id, Record: -1, Offset: offset}
	}
	good := func(marker string) output {
		v := fmt.Appendf(nil, `{"schemaVersion":1,"alertId":%q,"alert":{"e2eMarker":%q},"user":null,`+
			`"enrichment":{"status":"not_found","source":"api","enrichedAt":"2026-11-27T10:00:00.000Z","error":"404"},`+
			`"origin":{"topic":"in","partition":0,"offset":0}}`, id, marker)
		r := decodeOutput(&kgo.Record{Value: v}, time.Now())
		if r.DecodeErr != nil || r.Marker != marker {
			t.Fatalf("test output does not decode: %v", r.DecodeErr)
		}
		return r
	}
	inputs := []event{in("a", 0), in("b", 1), in("", 2)}
	dl := deadLetter{FromOffset: 2, Record: -1}

	rec := &errorRecorder{TB: t}
	r := verifyNoLoss(rec, inputs, []output{good("a"), good("b")}, []deadLetter{dl})
	if len(rec.errors) != 0 || r.Missing != 0 || r.Duplicates != 0 || r.Strays != 0 {
		t.Errorf("complete run: %+v %q", r, rec.errors)
	}

	rec = &errorRecorder{TB: t}
	offSchema := good("x")
	offSchema.Value = bytes.Replace(offSchema.Value, []byte(`"status":"not_found"`), []byte(`"status":"lost"`), 1)
	r = verifyNoLoss(rec, inputs, []output{good("a"), good("a"), good("z"), offSchema}, nil)
	if r.Missing != 2 || r.Duplicates != 1 || r.Strays != 2 || len(rec.errors) != 3 {
		t.Errorf("got %+v with errors %q; want 2 missing, 1 duplicate, 2 strays and 3 errors (missing, strays, schema)", r, rec.errors)
	}
}
