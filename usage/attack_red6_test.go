package usage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
)

// Red team 6: the verifiers' usage reports (keyledger.usage.report), as a
// holder of the read-only credential sends them.

// red6Reader connects to env's client port as the read-only subscriber.
func red6Reader(t *testing.T, env *natstest.Env) *nats.Conn {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(env.Embedded.ClientURL(), nk, nats.MaxReconnects(0), nats.CustomInboxPrefix(events.SubscriberInbox),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// red6ServiceAuth is the service's credential, which an embedded server
// with a client port requires of in-process connections too.
func red6ServiceAuth(t *testing.T, env *natstest.Env) []nats.Option {
	t.Helper()
	if env.Embedded.Credentials.Service == "" {
		return nil
	}
	nk, err := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Service)
	if err != nil {
		t.Fatal(err)
	}
	return []nats.Option{nk}
}

// red6Instance is an instance's outcomes on its own in-process connection
// (the service's account), answering reports for the keys known.
type red6Instance struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	store    *events.OutcomeStore
	o        *usage.Outcomes
	slow     atomic.Int64 // slow consumer and other async errors on nc
	serveErr chan error
}

func startRed6Instance(t *testing.T, ctx context.Context, env *natstest.Env, known func(org, id string) bool, follow bool) *red6Instance {
	t.Helper()
	in := &red6Instance{o: usage.NewOutcomes(), serveErr: make(chan error, 1)}
	nc, err := nats.Connect("", append(red6ServiceAuth(t, env), nats.InProcessServer(env.Embedded.Server),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { in.slow.Add(1) }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	in.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	in.js = js
	if in.store, err = events.OpenOutcomes(ctx, js, 1, 0, natstest.Quiet()); err != nil {
		t.Fatal(err)
	}
	if follow {
		go func() { _ = in.o.Follow(ctx, in.store, natstest.Quiet()) }()
	}
	in.o.Claims = in.store // as serve sets it
	if known != nil {
		go func() { in.serveErr <- in.o.ServeReports(ctx, nc, known, natstest.Quiet()) }()
		// The queue subscription is made asynchronously: wait until it answers.
		r := red6Reader(t, env)
		deadline := time.Now().Add(10 * time.Second)
		for {
			m := nats.NewMsg(events.UsageReportSubject)
			m.Header.Set(events.UsageReportServiceHeader, "probe")
			m.Data = []byte("keyledger-outcomes-v1\n")
			if _, err := r.RequestMsg(m, 200*time.Millisecond); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("ServeReports never answered")
			}
		}
	}
	return in
}

// streamInfo is the outcome stream's state.
func (in *red6Instance) streamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	s, err := in.js.Stream(ctx, events.OutcomeStream)
	if err != nil {
		return nil, err
	}
	return s.Info(ctx)
}

func report(service string, lines ...string) *nats.Msg {
	m := nats.NewMsg(events.UsageReportSubject)
	m.Header.Set(events.UsageReportServiceHeader, service)
	m.Data = []byte("keyledger-outcomes-v1\n" + strings.Join(lines, "\n") + "\n")
	return m
}

func askReport(t *testing.T, nc *nats.Conn, m *nats.Msg) usage.ReportAnswer {
	t.Helper()
	res, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var a usage.ReportAnswer
	if err := json.Unmarshal(res.Data, &a); err != nil {
		t.Fatalf("answer %q: %v", res.Data, err)
	}
	return a
}

// TestRed6ReportedCallersFromTheFutureLockOutRealCallers: a report's
// callers may say they were last seen up to a minute ahead of the
// instance's clock (the bound kept for the minutes). Twenty of them, sent
// once a minute, fill a key's callers with entries no real caller can
// displace (a caller replaces the oldest only when it is at least as
// recent): the manager looking at who still presents the old secret sees
// only the forger's names. A report's callers can be no later than now.
func TestRed6ReportedCallersFromTheFutureLockOutRealCallers(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 30, 0, time.UTC)
	o := usage.NewOutcomes()
	o.Now = func() time.Time { return now }
	all := func(string, string) bool { return true }
	ahead := now.Add(time.Minute).Unix()
	var callers []string
	for i := range usage.MaxCallers {
		callers = append(callers, fmt.Sprintf(`{"a":"198.51.100.%d","u":"decoy","f":%d,"l":%d,"n":1,"r":0}`, i, ahead, ahead))
	}
	line := fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,20,0,0,0,0]],"c":[%s]}`, now.Unix()/60, strings.Join(callers, ","))
	if n, err := o.MergeReport([]byte("keyledger-outcomes-v1\n"+line+"\n"), "decoys", all); n != 1 || err != nil {
		t.Fatalf("report: %d %v", n, err)
	}
	realCaller := usage.Caller{Address: netip.MustParseAddr("203.0.113.50"), UserAgent: "legacy-client/0.9"}
	o.Record("acme", "key_1", old, realCaller, now)
	o.Record("acme", "key_1", old, realCaller, now.Add(20*time.Second))
	var seen bool
	for _, c := range o.Callers("acme", "key_1") {
		if c.Caller == realCaller {
			seen = true
		}
		if c.LastSeen.After(now.Add(20 * time.Second)) {
			t.Errorf("a reported caller last seen at %s, after the instance's now %s", c.LastSeen, now)
		}
	}
	if !seen {
		t.Errorf("the caller presenting the old secret twice is not among the key's callers: 20 reported callers a minute ahead keep it out")
	}
}

// TestRed6ReportedCallerCountsStayConsistentAcrossInstances: a reported
// caller's count is bounded by the key's counted minutes, which may sum to
// more than 2^32 (five classes of up to 2^32-1 per minute); the instance
// kept the count in 64 bits and its unpublished part in 32, so its flush
// published the count modulo 2^32 (0 for exactly 2^32: no caller at all)
// while the instance itself, and its rollup, kept all of it. Instances
// must agree on what a report counted.
func TestRed6ReportedCallerCountsStayConsistentAcrossInstances(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newOutcomeInstance(t, ctx, env), newOutcomeInstance(t, ctx, env)
	now := time.Now()
	all := func(string, string) bool { return true }
	line := fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,4294967295,1,0,0,0]],"c":[{"a":"198.51.100.1","u":"big","f":%d,"l":%d,"n":4294967296,"r":0}]}`,
		now.Unix()/60, now.Unix(), now.Unix())
	if n, err := a.o.MergeReport([]byte("keyledger-outcomes-v1\n"+line+"\n"), "svc", all); n != 1 || err != nil {
		t.Fatalf("report: %d %v", n, err)
	}
	if _, err := a.o.Flush(ctx, a.store); err != nil {
		t.Fatal(err)
	}
	waitTotal(t, b, "key_1", now.Add(-time.Hour), usage.Counts{Valid: 4294967295, Deprecated: 1})
	count := func(in *outcomeInstance) uint64 {
		var n uint64
		for _, c := range in.o.Callers("acme", "key_1") {
			n += c.Count
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for count(b) != count(a) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if ca, cb := count(a), count(b); ca != cb {
		t.Errorf("the reported caller made %d calls on the instance that took the report, %d on the one following the stream", ca, cb)
	}
}

// TestRed6ReportsOnlyAdd (held): nothing a report says takes a count
// away (negative counts, a caller with a count of 0 or a bad outcome), and
// counts saturate rather than wrap: a key in use cannot be made to look
// unused, nor a revoked key's presentations hidden.
func TestRed6ReportsOnlyAdd(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 30, 0, time.UTC)
	o := usage.NewOutcomes()
	o.Now = func() time.Time { return now }
	all := func(string, string) bool { return true }
	c := usage.Caller{Address: netip.MustParseAddr("192.0.2.1"), UserAgent: "real"}
	o.Record("acme", "key_1", revoked, c, now)
	o.Record("acme", "key_1", valid, c, now)
	minute := now.Unix() / 60
	for _, l := range []string{
		fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,-5,-5,-5,-5,-5]]}`, minute),
		fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,-9223372036854775808,0,0,-9223372036854775808,0]]}`, minute),
		fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,9223372036854775807,0,0,9223372036854775807,0],[%d,9223372036854775807,0,0,0,0]]}`, minute, minute),
		fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,1,0,0,0,0]],"c":[{"a":"192.0.2.1","u":"real","f":0,"l":0,"n":18446744073709551615,"r":9}]}`, minute),
	} {
		_, _ = o.MergeReport([]byte("keyledger-outcomes-v1\n"+l+"\n"), "svc", all)
		got := o.Totals("acme", "key_1", now.Add(-time.Hour))
		if got.Valid < 1 || got.Revoked < 1 {
			t.Errorf("after %s: %+v, the real valid and revoked use gone", l, got)
		}
	}
	if got := o.Totals("acme", "key_1", now.Add(-time.Hour)); got.Valid != 1<<32-1 || got.Revoked != 1<<32-1 {
		t.Errorf("saturated: %+v, want 2^32-1 valid and revoked", got)
	}
}

// TestRed6ReportMinutesInAnyOrderCostTheSame (held: 1.6× measured): a report's minutes are
// inserted one by one into the key's sorted lists (minutes, pending) and
// their hours; newest first, each insertion moves the whole list. A
// report should cost about the same whatever the order of its minutes.
func TestRed6ReportMinutesInAnyOrderCostTheSame(t *testing.T) {
	now := time.Now()
	minute := now.Unix() / 60
	all := func(string, string) bool { return true }
	build := func(desc bool) []byte {
		var b strings.Builder
		b.WriteString("keyledger-outcomes-v1\n")
		for k := 0; b.Len() < usage.MaxReportBytes-64<<10; k++ {
			fmt.Fprintf(&b, `{"o":"acme","k":"key_%d","m":[`, k)
			for i := range usage.MinuteBuckets - 1 {
				at := minute - int64(usage.MinuteBuckets-2) + int64(i)
				if desc {
					at = minute - int64(i)
				}
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "[%d,1,0,0,0,0]", at)
			}
			b.WriteString("]}\n")
		}
		return []byte(b.String())
	}
	cost := func(desc bool) (time.Duration, int) {
		data := build(desc)
		best := time.Duration(1 << 62)
		var keys int
		for range 3 {
			o := usage.NewOutcomes()
			start := time.Now()
			n, err := o.MergeReport(data, "svc", all)
			if err != nil {
				t.Fatal(err)
			}
			best, keys = min(best, time.Since(start)), n
		}
		return best, keys
	}
	asc, keys := cost(false)
	desc, _ := cost(true)
	t.Logf("a report of %d keys × %d minutes (%d bytes): oldest first %v, newest first %v (%.1f×)",
		keys, usage.MinuteBuckets-1, len(build(true)), asc, desc, float64(desc)/float64(asc))
	if desc > 3*asc {
		t.Errorf("newest first costs %v, %.1f× oldest first (%v)", desc, float64(desc)/float64(asc), asc)
	}
}

// TestRed6ForgedReportsFillEveryKnownKey measures what a holder of the
// read-only credential makes an instance hold: every known key's day of
// minutes and 20 callers with the longest User-Agents, whatever it was
// really used; and what the instance's next flush then writes to the
// stream. Measured before the fix (2026-12-04, 1,000 keys, 100 reports,
// 102 MB sent): 114 KB of heap a key (a key used once: 401 B), and a next
// flush of 130 KB a key into the stream: under 8,000 known keys filled the
// stream's 1 GiB in one flush. Fixed: a report's minutes count only
// ReportReach (an hour) back, its callers take at most MaxReportedCallers
// of a key's places, and reports count at most MaxReportedKeys keys an
// hour: 8.9 KB of heap and 12.8 KB of the next flush a key at most
// (2026-12-04; the User-Agents' "<" written \u003c), for at most that
// many keys (10,000: 89 MB, and 128 MB into the stream a minute while
// the forger keeps it up; SECURITY.md).
func TestRed6ForgedReportsFillEveryKnownKey(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const keys = 1000
	known := func(org, id string) bool { return org == "acme" && strings.HasPrefix(id, "key_") }
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	in := startRed6Instance(t, ctx, env, known, false)
	r := red6Reader(t, env)
	minute := time.Now().Unix() / 60
	var sent, reports int
	var lines []string
	size := 0
	ua := strings.Repeat("<", usage.MaxUserAgent)
	send := func() {
		m := report(strings.Repeat("s", usage.MaxService), lines...)
		sent += len(m.Data)
		reports++
		if a := askReport(t, r, m); a.Keys != len(lines) {
			t.Fatalf("report of %d keys counted %d: %s", len(lines), a.Keys, a.Error)
		}
		lines, size = nil, 0
	}
	for k := range keys {
		var b strings.Builder
		fmt.Fprintf(&b, `{"o":"acme","k":"key_%04d","m":[`, k)
		for i := range usage.MinuteBuckets {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "[%d,4294967295,4294967295,4294967295,4294967295,4294967295]", minute-int64(usage.MinuteBuckets-2)+int64(i))
		}
		b.WriteString(`],"c":[`)
		for i := range usage.MaxCallers {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"a":"198.51.%d.%d","u":%q,"f":%d,"l":%d,"n":1,"r":0}`, k%256, i, ua, minute*60, minute*60)
		}
		b.WriteString("]}")
		if size+b.Len()+64 > usage.MaxReportBytes {
			send()
		}
		lines = append(lines, b.String())
		size += b.Len() + 1
	}
	send()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	perKey := (int64(after.HeapInuse) - int64(before.HeapInuse)) / keys
	t.Logf("%d reports, %d bytes sent: %d keys held, %d B of heap a key (a key used once: ~401 B)", reports, sent, in.o.Known(), perKey)
	if perKey > 12<<10 {
		t.Errorf("%d B a key from forged reports, over 12 KB", perKey)
	}

	infoBefore, err := in.streamInfo(ctx)
	if err != nil {
		t.Skip("no stream info:", err)
	}
	start := time.Now()
	n, err := in.o.Flush(ctx, in.store)
	infoAfter, _ := in.streamInfo(ctx)
	t.Logf("the next flush: %d keys in %v (%v), the stream %d → %d bytes (%d B a key)", n, time.Since(start), err,
		infoBefore.State.Bytes, infoAfter.State.Bytes, (infoAfter.State.Bytes-infoBefore.State.Bytes)/keys)
	if err != nil {
		t.Errorf("the flush after the reports failed: %v", err)
	}
	if per := (infoAfter.State.Bytes - infoBefore.State.Bytes) / keys; per > 16<<10 {
		t.Errorf("the flush after forged reports wrote %d B a key into the stream, over 16 KB", per)
	}
}

// TestRed6ReportFloodLeavesTheInstanceWorking floods keyledger.usage.report
// with the read-only credential, 1 MiB reports of known keys as fast as a
// client sends them, and measures whether the instance's connection
// (which carries all of its NATS work) stays up and answers, and its
// memory. Measured (2026-12-04, 2 cores): ~1 GB/s of reports for 5 s; the
// connection stayed up, its stream info took 48 ms at worst, a Record of a
// flooded key 18 ms at worst, heap peak 263 MB; the report subscription
// dropped reports (94 slow-consumer errors) and a real report waited 2.9 s
// behind the queue: real verifiers' reports are dropped or late (and then
// counted again, see TestRed6BusyInstanceCountsAVerifiersReportManyTimes
// in verifier/).
func TestRed6ReportFloodLeavesTheInstanceWorking(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	known := func(org, id string) bool { return org == "acme" }
	in := startRed6Instance(t, ctx, env, known, true)
	minute := time.Now().Unix() / 60
	var b strings.Builder
	for k := 0; b.Len() < usage.MaxReportBytes-100<<10; k++ {
		fmt.Fprintf(&b, `{"o":"acme","k":"key_%04d","m":[`, k)
		for i := range 1400 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "[%d,1,0,0,0,0]", minute-int64(i)) // newest first
		}
		b.WriteString("]}\n")
	}
	body := b.String()
	attacker := red6Reader(t, env)
	stop := make(chan struct{})
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				m := report("flood", strings.TrimSuffix(body, "\n"))
				if attacker.PublishMsg(m) != nil {
					return
				}
				sent.Add(1)
				if sent.Load()%64 == 0 {
					_ = attacker.Flush()
				}
			}
		}()
	}
	// Meanwhile the instance's own NATS work: stream info over its
	// connection, as its JetStream calls are.
	js := in.js
	var worst, worstRecord time.Duration
	var peak uint64
	var failures int
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		// The verify path: a verification of a key the flood names.
		for range 100 {
			start := time.Now()
			in.o.Record("acme", "key_0000", valid, here, time.Now())
			worstRecord = max(worstRecord, time.Since(start))
		}
		start := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := js.Stream(cctx, events.OutcomeStream)
		ccancel()
		if err != nil {
			failures++
		}
		worst = max(worst, time.Since(start))
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapInuse)
	}
	close(stop)
	wg.Wait()
	// How long until a real verifier's report is answered.
	start := time.Now()
	_, err := red6Reader(t, env).RequestMsg(report("billing", fmt.Sprintf(`{"o":"acme","k":"key_0000","m":[[%d,1,0,0,0,0]]}`, minute)), 30*time.Second)
	t.Logf("flood: %d reports of %d bytes in 5 s (%.0f MB/s); a Record of a flooded key worst %v; the instance's stream info worst %v, %d failed; heap peak %d MB; async errors on its connection %d; then a real report answered in %v (%v)",
		sent.Load(), len(body), float64(sent.Load())*float64(len(body))/5e6, worstRecord, worst, failures, peak>>20, in.slow.Load(), time.Since(start), err)
	if in.nc.Status() != nats.CONNECTED {
		t.Errorf("the instance's connection is %v after the flood", in.nc.Status())
	}
	if failures > 0 || worst > 2*time.Second {
		t.Errorf("the instance's own NATS requests suffered: %d failed, worst %v", failures, worst)
	}
}

// TestRed6ReportReplySubjectsStayInTheReadAccount (held): a report whose
// reply subject names the outcome stream's subject, an event subject, or
// the JetStream API is answered across the import, into the read-only
// account: nothing lands in the outcome stream or the event stream.
func TestRed6ReportReplySubjectsStayInTheReadAccount(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := startRed6Instance(t, ctx, env, func(string, string) bool { return true }, false)
	r := red6Reader(t, env)
	outBefore, err := in.streamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	evBefore := env.LastSeq(t)
	minute := time.Now().Unix() / 60
	for _, reply := range []string{events.OutcomeSubject, events.SubjectRoot + ".acme.key_1.revoked", "$JS.API.STREAM.PURGE." + events.OutcomeStream, "$KV." + events.IdempotencyBucket + ".x"} {
		m := report("svc", fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,1,0,0,0,0]]}`, minute))
		m.Reply = reply
		if err := r.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	_ = r.Flush()
	time.Sleep(300 * time.Millisecond)
	if got := in.o.Totals("acme", "key_1", time.Now().Add(-time.Hour)).Valid; got != 4 {
		t.Errorf("%d valid counted, want the 4 reports", got)
	}
	outAfter, _ := in.streamInfo(ctx)
	if outAfter.State.Msgs != outBefore.State.Msgs {
		t.Errorf("the outcome stream went from %d to %d messages", outBefore.State.Msgs, outAfter.State.Msgs)
	}
	if got := env.LastSeq(t); got != evBefore {
		t.Errorf("the event stream went from %d to %d", evBefore, got)
	}
}

// TestRed6ReportResentAfterALostAnswerCountsTwice: a verifier whose
// request times out (the instance busy, the answer lost) keeps the batch
// and sends it again, the same bytes under the same Nats-Msg-Id, with
// the next flush; keyledger told no resend from a new report and counted
// it again (14 for 7). Fixed: see ServeReports.
func TestRed6ReportResentAfterALostAnswerCountsTwice(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := startRed6Instance(t, ctx, env, func(string, string) bool { return true }, false)
	r := red6Reader(t, env)
	minute := time.Now().Unix() / 60
	line := fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,7,0,0,0,0]]}`, minute)
	for range 2 {
		m := report("billing", line)
		m.Header.Set(nats.MsgIdHdr, "same-batch-0") // as the verifier's resend carries it
		askReport(t, r, m)
	}
	if got := in.o.Totals("acme", "key_1", time.Now().Add(-time.Hour)).Valid; got != 7 {
		t.Errorf("a batch of 7 verifications sent twice (its answer lost once) counts %d", got)
	}
}

// TestRed6ReportInTheRollupExactlyOnce (held): a report merged on A is
// A's pending count: a rollup written before A's flush leaves it out, the
// flush shares it once, and an instance started from that rollup and the
// stream after it counts it once, as one following all along does.
func TestRed6ReportInTheRollupExactlyOnce(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newOutcomeInstance(t, ctx, env), newOutcomeInstance(t, ctx, env)
	now := time.Now()
	since := now.Add(-time.Hour)
	all := func(string, string) bool { return true }
	a.o.Record("acme", "key_1", valid, here, now)
	if _, err := a.o.Flush(ctx, a.store); err != nil {
		t.Fatal(err)
	}
	line := fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,5,0,0,0,0]],"c":[{"a":"198.51.100.1","u":"svc","f":%d,"l":%d,"n":5,"r":0}]}`, now.Unix()/60, now.Unix(), now.Unix())
	if n, err := a.o.MergeReport([]byte("keyledger-outcomes-v1\n"+line+"\n"), "billing", all); n != 1 || err != nil {
		t.Fatalf("report: %d %v", n, err)
	}
	waitTotal(t, b, "key_1", since, usage.Counts{Valid: 1})
	if wrote, err := a.o.Rollup(ctx, a.store, true); !wrote || err != nil {
		t.Fatalf("rollup: %v %v", wrote, err)
	}
	if _, err := a.o.Flush(ctx, a.store); err != nil {
		t.Fatal(err)
	}
	want := usage.Counts{Valid: 6}
	c := newOutcomeInstance(t, ctx, env)
	for _, in := range []*outcomeInstance{a, b, c} {
		waitTotal(t, in, "key_1", since, want)
	}
	time.Sleep(200 * time.Millisecond)
	for name, in := range map[string]*outcomeInstance{"A": a, "B": b, "C": c} {
		if got := in.o.Totals("acme", "key_1", since); got != want {
			t.Errorf("%s settles at %+v, want %+v", name, got, want)
		}
		var calls uint64
		for _, cs := range in.o.Callers("acme", "key_1") {
			calls += cs.Count
		}
		if calls != 6 {
			t.Errorf("%s counts %d calls by the key's callers, want 6", name, calls)
		}
	}
}

// TestRed6ReportResentToAnotherInstanceCountsTwice: the resend of a
// report whose answer was lost may go to another instance of the queue
// group, which has not seen its id: it counted twice across the
// deployment (14 for 7), until instances claimed report ids in the
// outcome stream (Outcomes.Claims). Here A answers the first copy and
// stops answering reports; B gets the resend.
func TestRed6ReportResentToAnotherInstanceCountsTwice(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := func(string, string) bool { return true }
	actx, stopA := context.WithCancel(ctx)
	a := startRed6Instance(t, actx, env, all, true)
	r := red6Reader(t, env)
	minute := time.Now().Unix() / 60
	line := fmt.Sprintf(`{"o":"acme","k":"key_1","m":[[%d,7,0,0,0,0]]}`, minute)
	m := report("billing", line)
	m.Header.Set(nats.MsgIdHdr, "batch-0")
	askReport(t, r, m)
	stopA()
	if err := <-a.serveErr; err != nil {
		t.Fatal(err)
	}
	b := startRed6Instance(t, ctx, env, all, true)
	m = report("billing", line)
	m.Header.Set(nats.MsgIdHdr, "batch-0")
	askReport(t, r, m)
	for _, in := range []*red6Instance{a, b} {
		if _, err := in.o.Flush(ctx, in.store); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if got := b.o.Totals("acme", "key_1", time.Now().Add(-time.Hour)).Valid; got != 7 {
		t.Errorf("a batch of 7 verifications, resent to another instance, counts %d", got)
	}
}
