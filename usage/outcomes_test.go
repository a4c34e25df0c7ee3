package usage_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
)

var (
	here    = usage.Caller{Address: netip.MustParseAddr("192.0.2.7"), UserAgent: "billing/2.1"}
	valid   = usage.Outcome{Class: usage.Valid}
	old     = usage.Outcome{Class: usage.Deprecated, Replaced: true}
	revoked = usage.Outcome{Class: usage.Revoked}
)

func TestOutcomesCountByMinuteAndHour(t *testing.T) {
	now := time.Date(2026, 3, 4, 10, 30, 20, 0, time.UTC)
	o := usage.NewOutcomes()
	o.Now = func() time.Time { return now }
	o.Record("acme", "key_1", valid, here, now)
	o.Record("acme", "key_1", valid, here, now.Add(-time.Minute))
	o.Record("acme", "key_1", old, here, now.Add(-2*time.Hour))
	o.Record("acme", "key_1", revoked, here, now.Add(-30*time.Hour))
	o.Record("acme", "key_2", valid, here, now)

	from := now.Truncate(time.Minute).Add(-2 * time.Minute)
	got := o.Series("acme", "key_1", from, time.Minute, 3)
	if got[0].Total() != 0 || got[1].Valid != 1 || got[2].Valid != 1 {
		t.Errorf("minutes %+v, want [0 1 1] valid", got)
	}
	hours := o.Series("acme", "key_1", now.Truncate(time.Hour).Add(-47*time.Hour), time.Hour, 48)
	var sum usage.Counts
	for _, c := range hours {
		sum.Add(c)
	}
	if want := (usage.Counts{Valid: 2, Deprecated: 1, Revoked: 1, Replaced: 1}); sum != want {
		t.Errorf("48 hours sum to %+v, want %+v", sum, want)
	}
	if got, want := hours[47].Valid, uint64(2); got != want {
		t.Errorf("the current hour has %d valid, want %d", got, want)
	}
	if got, want := o.Totals("acme", "key_1", now.Add(-24*time.Hour)), (usage.Counts{Valid: 2, Deprecated: 1, Replaced: 1}); got != want {
		t.Errorf("24h totals %+v, want %+v", got, want)
	}
	if got := o.Totals("acme", "key_3", now.Add(-24*time.Hour)); got.Total() != 0 {
		t.Errorf("a key never used has %+v", got)
	}
	if got, want := o.Known(), 2; got != want {
		t.Errorf("%d keys known, want %d", got, want)
	}
}

func TestOutcomesKeepTwentyCallersLatestFirst(t *testing.T) {
	now := time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	o := usage.NewOutcomes()
	for i := range 25 {
		c := usage.Caller{Address: netip.MustParseAddr(fmt.Sprintf("198.51.100.%d", i)), UserAgent: "agent"}
		o.Record("acme", "key_1", valid, c, now.Add(time.Duration(i)*time.Second))
		o.Record("acme", "key_1", revoked, c, now.Add(time.Duration(i)*time.Second+time.Millisecond))
	}
	got := o.Callers("acme", "key_1")
	if len(got) != usage.MaxCallers {
		t.Fatalf("%d callers kept, want %d", len(got), usage.MaxCallers)
	}
	if got, want := got[0].Address.String(), "198.51.100.24"; got != want {
		t.Errorf("latest caller %s, want %s", got, want)
	}
	if got, want := got[19].Address.String(), "198.51.100.5"; got != want {
		t.Errorf("oldest caller kept %s, want %s (the five oldest evicted)", got, want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].LastSeen.After(got[i-1].LastSeen) {
			t.Errorf("callers not latest first at %d", i)
		}
	}
	if c := got[0]; c.Count != 2 || c.LastOutcome != usage.Revoked || !c.FirstSeen.Equal(now.Add(24*time.Second)) {
		t.Errorf("caller %+v: want 2 calls, last revoked, first seen at %s", c, now.Add(24*time.Second))
	}
}

func TestRecordAllocatesNothingInTheSteadyState(t *testing.T) {
	now := time.Now()
	o := usage.NewOutcomes()
	org, id, ua := "acme", "key_01HX", strings.Repeat("a", 400)
	c := usage.Caller{Address: netip.MustParseAddr("192.0.2.1"), UserAgent: ua}
	o.Record(org, id, valid, c, now)
	if n := testing.AllocsPerRun(1000, func() { o.Record(org, id, valid, c, now) }); n != 0 {
		t.Errorf("Record allocates %.1f times a call, want 0", n)
	}
}

func TestClipKeepsValidUTF8WithinTheBound(t *testing.T) {
	for _, s := range []string{strings.Repeat("é", 200), strings.Repeat("a", 255) + "€", "bad\xff\xfebytes", "short"} {
		got := usage.Clip(s, usage.MaxUserAgent)
		if len(got) > usage.MaxUserAgent || !utf8.ValidString(got) {
			t.Errorf("Clip(%q) = %q: %d bytes, valid %v", s, got, len(got), utf8.ValidString(got))
		}
		if len(s) <= usage.MaxUserAgent && utf8.ValidString(s) && got != s {
			t.Errorf("Clip changed %q to %q", s, got)
		}
	}
}

// outcomeInstance is one keyledger's outcomes on its own NATS connection.
type outcomeInstance struct {
	store *events.OutcomeStore
	o     *usage.Outcomes
}

func newOutcomeInstance(t *testing.T, ctx context.Context, env *natstest.Env) *outcomeInstance {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(env.Embedded.Server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenOutcomes(ctx, js, 1, 0, natstest.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	in := &outcomeInstance{store: store, o: usage.NewOutcomes()}
	go func() { _ = in.o.Follow(ctx, store, natstest.Quiet()) }()
	return in
}

func waitTotal(t *testing.T, in *outcomeInstance, id string, since time.Time, want usage.Counts) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := in.o.Totals("acme", id, since)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: totals %+v, want %+v", id, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOutcomesMergeAcrossInstancesExactlyOnce runs two instances on a
// real nats-server: each counts the other's outcomes once and its own once
// (its own batches skipped by its watch), callers merge, and a third
// instance started after a rollup, and after more batches, counts the
// same.
func TestOutcomesMergeAcrossInstancesExactlyOnce(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newOutcomeInstance(t, ctx, env), newOutcomeInstance(t, ctx, env)
	now := time.Now()
	since := now.Add(-time.Hour)
	other := usage.Caller{Address: netip.MustParseAddr("203.0.113.9"), UserAgent: "cron"}
	for range 3 {
		a.o.Record("acme", "key_1", valid, here, now)
	}
	b.o.Record("acme", "key_1", old, other, now)
	b.o.Record("acme", "key_1", revoked, other, now)
	for _, in := range []*outcomeInstance{a, b} {
		if _, err := in.o.Flush(ctx, in.store); err != nil {
			t.Fatal(err)
		}
	}
	want := usage.Counts{Valid: 3, Deprecated: 1, Revoked: 1, Replaced: 1}
	waitTotal(t, a, "key_1", since, want)
	waitTotal(t, b, "key_1", since, want)
	if got := b.o.Callers("acme", "key_1"); len(got) != 2 || got[0].Count+got[1].Count != 5 {
		t.Errorf("B knows callers %+v, want 2 with 5 calls", got)
	}

	// A rolls up while B has a use not flushed yet, which must not be in it.
	b.o.Record("acme", "key_1", valid, other, now)
	if wrote, err := a.o.Rollup(ctx, a.store, true); err != nil || !wrote {
		t.Fatalf("rollup: %v %v", wrote, err)
	}
	if _, err := b.o.Flush(ctx, b.store); err != nil {
		t.Fatal(err)
	}
	want.Valid++
	c := newOutcomeInstance(t, ctx, env)
	waitTotal(t, c, "key_1", since, want)
	waitTotal(t, a, "key_1", since, want)
	// Nothing more comes: C does not count anything twice.
	time.Sleep(200 * time.Millisecond)
	if got := c.o.Totals("acme", "key_1", since); got != want {
		t.Errorf("C: %+v after settling, want %+v", got, want)
	}
	var calls uint64
	for _, cs := range c.o.Callers("acme", "key_1") {
		calls += cs.Count
	}
	if calls != 6 {
		t.Errorf("C counts %d calls by its callers, want 6", calls)
	}
}
