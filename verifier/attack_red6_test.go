package verifier_test

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/verifier"
)

// TestRed6BusyInstanceCountsAVerifiersReportManyTimes: a verifier waits
// at most its report interval (10 s at most) for keyledger's answer; when
// it gets none it keeps the batch and sends it again with the next,
// forever. A report is queued, not lost: an instance busy for longer than
// the verifier waits (here another holder of the read-only credential
// sends large reports, as fast as it can, for 2 s) merges every copy once
// it reaches them. keyledger told no resend from a new report: 5
// verifications counted 80 to 90 times. Fixed: the verifier sends its
// batch's id, the instance remembers the last 65,536 and claims each in
// the outcome stream (usage: TestRed6ReportResentToAnotherInstanceCountsTwice).
func TestRed6BusyInstanceCountsAVerifiersReportManyTimes(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	keys := &domain.Keys{Store: env.Store}
	k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "billing", Scopes: []string{"read"}, By: domain.SystemPrincipal("test", "test")})
	if err != nil {
		t.Fatal(err)
	}
	// The instance answering reports, on the service's account as serve's is.
	inc, err := nats.Connect("", red6ServiceAuth(t, env), nats.InProcessServer(env.Embedded.Server), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inc.Close)
	o := usage.NewOutcomes()
	go func() { _ = o.ServeReports(ctx, inc, func(string, string) bool { return true }, natstest.Quiet()) }()

	nk, err := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Subscriber)
	if err != nil {
		t.Fatal(err)
	}
	flooder, err := nats.Connect(env.Embedded.ClientURL(), nk, nats.CustomInboxPrefix(verifier.SubscriberInbox), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(flooder.Close)
	eventually(t, "ServeReports answers", func() bool {
		m := nats.NewMsg(events.UsageReportSubject)
		m.Header.Set(events.UsageReportServiceHeader, "probe")
		m.Data = []byte("keyledger-outcomes-v1\n")
		_, err := flooder.RequestMsg(m, 200*time.Millisecond)
		return err == nil
	})

	v := startVerifier(t, env, env.Embedded.ClientURL(), verifier.Options{Service: "billing", ReportEvery: 300 * time.Millisecond})
	eventually(t, "the verifier knows the key", func() bool { return v.Verify(k.Secret).Valid() })
	for range 4 { // and the one above: 5 valid uses
		v.VerifyFrom(k.Secret, verifier.Caller{Address: netip.MustParseAddr("10.0.0.9"), UserAgent: "billing/1"})
	}

	minute := time.Now().Unix() / 60
	var b strings.Builder
	b.WriteString("keyledger-outcomes-v1\n")
	for n := 0; b.Len() < usage.MaxReportBytes-64<<10; n++ {
		fmt.Fprintf(&b, `{"o":"acme","k":"key_x%d","m":[`, n)
		for i := range 1400 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "[%d,1,0,0,0,0]", minute-1400+int64(i))
		}
		b.WriteString("]}\n")
	}
	flood := []byte(b.String())
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		m := nats.NewMsg(events.UsageReportSubject)
		m.Header.Set(events.UsageReportServiceHeader, "flood")
		m.Data = flood
		if err := flooder.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		_ = flooder.Flush()
	}
	// Let the instance drain its queue and the verifier report again.
	var got uint64
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		prev := got
		got = o.Totals("acme", k.Key.ID, time.Now().Add(-time.Hour)).Valid
		if got >= 5 && got == prev {
			break
		}
	}
	if got != 5 {
		t.Errorf("5 verifications in the verifier count %d in keyledger after its reports were answered late", got)
	}
}

// red6ServiceAuth is the service's credential, which an embedded server
// with a client port requires of in-process connections too.
func red6ServiceAuth(t *testing.T, env *natstest.Env) nats.Option {
	t.Helper()
	nk, err := nats.NkeyOptionFromSeed(env.Embedded.Credentials.Service)
	if err != nil {
		t.Fatal(err)
	}
	return nk
}

// red6Capture keeps the messages of a flush: it only measures the length
// of a key's line as a flush writes it.
type red6Capture struct{ msgs [][]byte }

func (c *red6Capture) MaxPayload() int { return 1 << 30 }
func (c *red6Capture) Publish(_ context.Context, _ []string, msgs [][]byte) (uint64, error) {
	c.msgs = append(c.msgs, msgs...)
	return 0, nil
}

// TestRed6AFullReportIsNotStuckOverTheMaxPayload: the verifier fills a
// report's messages up to the server's max payload, and sends each with
// its Keyledger-Service header, which NATS counts in the payload: a
// message whose lines happen to end within the header's length of the
// limit is refused (maximum payload exceeded) before it is sent, and, as
// a failed publication, sent again first by every later flush, refused
// the same: the verifier never reports again and its unpublished counts
// grow for as long as it runs. Here the keys' lines are made of a length
// that lands there; with real traffic (lines of about 150 bytes, a
// 40-byte header) about a quarter of the flushes of a megabyte would.
func TestRed6AFullReportIsNotStuckOverTheMaxPayload(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const service = "billing"
	header := len("NATS/1.0\r\n" + events.UsageReportServiceHeader + ": " + service + "\r\n\r\n")
	limit := int(env.Embedded.Conn.MaxPayload())
	batchHead := len("keyledger-outcomes-v1\n")
	addr := func(i int) netip.Addr { return netip.MustParseAddr(fmt.Sprintf("100.64.100.%d", 110+i)) }
	lineLen := func(callers, ua int) int {
		o := usage.NewOutcomes()
		at := time.Now()
		for i := range callers {
			o.Record("acme", "key_"+strings.Repeat("0", 26), usage.Outcome{Class: usage.Valid},
				usage.Caller{Address: addr(i), UserAgent: strings.Repeat("a", ua), Service: service}, at)
		}
		var c red6Capture
		if _, err := o.Flush(ctx, &c); err != nil || len(c.msgs) != 1 {
			t.Fatalf("measure: %v %d", err, len(c.msgs))
		}
		return len(c.msgs[0]) - batchHead
	}
	callers, ua, d := 0, 0, 0
search:
	for c := 10; c <= 19; c++ {
		for u := 100; u <= 256; u++ {
			if l := lineLen(c, u); (limit-batchHead)%l < header {
				callers, ua, d = c, u, l
				break search
			}
		}
	}
	if d == 0 {
		t.Skip("no line length lands within the header of the max payload")
	}
	perMsg := (limit - batchHead) / d
	n := perMsg + 5
	t.Logf("%d callers with %d-byte User-Agents: lines of %d bytes, %d a message of %d bytes, %d of header: %d over %d",
		callers, ua, d, perMsg, batchHead+perMsg*d, header, batchHead+perMsg*d+header-limit, limit)

	keys := &domain.Keys{Store: env.Store}
	by := domain.SystemPrincipal("test", "test")
	secrets := make([]string, n)
	for i := range n {
		k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: fmt.Sprintf("k%d", i), Scopes: []string{"read"}, By: by})
		if err != nil {
			t.Fatal(err)
		}
		secrets[i] = k.Secret
	}
	inc, err := nats.Connect("", red6ServiceAuth(t, env), nats.InProcessServer(env.Embedded.Server), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(inc.Close)
	o := usage.NewOutcomes()
	go func() { _ = o.ServeReports(ctx, inc, func(string, string) bool { return true }, natstest.Quiet()) }()
	time.Sleep(200 * time.Millisecond) // the queue subscription

	v := startVerifier(t, env, env.Embedded.ClientURL(), verifier.Options{Service: service, ReportEvery: 3 * time.Second})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := v.WaitFor(wctx, env.LastSeq(t)); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		for i := range callers {
			if r := v.VerifyFrom(s, verifier.Caller{Address: addr(i), UserAgent: strings.Repeat("a", ua)}); !r.Valid() {
				t.Fatalf("verify: %s", r.Code)
			}
		}
	}
	keysCounted := o.Known
	deadline := time.Now().Add(8 * time.Second)
	for keysCounted() < n && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := keysCounted(); got != n {
		t.Errorf("after 8 s (reports every 3 s) keyledger counts %d of the %d keys the verifier verified", got, n)
	}
}

// TestRed6VerifierMemoryStaysBoundedWhileKeyledgerDoesNotAnswer: a
// verifier given a service name whose reports keyledger does not take
// (no instance answering keyledger.usage.report: one of a release before
// the reports, or an outage) keeps the failed batch and every minute
// recorded since, unpublished, for as long as that lasts; keyledger counts
// no reported minute older than a day, but the verifier's unpublished
// minutes grew by a bucket a key a minute without end. The clock here runs
// three days of minutes, 500 keys verified each minute.
func TestRed6VerifierMemoryStaysBoundedWhileKeyledgerDoesNotAnswer(t *testing.T) {
	env := natstest.StartListening(t)
	ctx := context.Background()
	keys := &domain.Keys{Store: env.Store}
	by := domain.SystemPrincipal("test", "test")
	const n = 500
	secrets := make([]string, n)
	for i := range n {
		k, err := keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: fmt.Sprintf("k%d", i), Scopes: []string{"read"}, By: by})
		if err != nil {
			t.Fatal(err)
		}
		secrets[i] = k.Secret
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	v := startVerifier(t, env, env.Embedded.ClientURL(), verifier.Options{Service: "billing", ReportEvery: 20 * time.Millisecond, Now: now})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := v.WaitFor(wctx, env.LastSeq(t)); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	caller := verifier.Caller{Address: netip.MustParseAddr("10.0.0.1"), UserAgent: "svc"}
	var byDay []uint64
	for day := range 3 {
		for range 24 * 60 {
			clock.Add(int64(time.Minute))
			for _, s := range secrets {
				if r := v.VerifyFrom(s, caller); !r.Valid() {
					t.Fatalf("day %d: %s", day, r.Code)
				}
			}
		}
		byDay = append(byDay, heap())
	}
	t.Logf("heap after each day of minutes: %d, %d, %d MB", byDay[0]>>20, byDay[1]>>20, byDay[2]>>20)
	if grew := int64(byDay[2]) - int64(byDay[1]); grew > n*24*60*24/4 {
		t.Errorf("the third day grew the heap by %d bytes (%d a key): the verifier keeps every unpublished minute", grew, grew/n)
	}
}
