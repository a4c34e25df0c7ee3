package usage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
)

// instance is one keyledger's usage: its own NATS connection, store and
// tracker, watching as serve's does.
type instance struct {
	store *events.UsageStore
	uses  *usage.Tracker
}

func newInstance(t *testing.T, ctx context.Context, env *natstest.Env) *instance {
	t.Helper()
	nc, err := nats.Connect("", nats.InProcessServer(env.Embedded.Server), nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
		t.Logf("NATS async error (%s): %v", s.Subject, err)
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := events.OpenUsage(ctx, js, 1, natstest.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	store.BatchBytes, store.Window = 4096, 2 // many messages, few in flight
	in := &instance{store: store, uses: usage.New()}
	go func() { _ = store.Watch(ctx, in.uses.Merge) }()
	return in
}

// waitKnows waits until in knows org/id used at (or later).
func waitKnows(t *testing.T, in *instance, org, id string, at time.Time) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for in.uses.LastUsed(org, id).Before(at) {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: last use %s, never %s", org, id, in.uses.LastUsed(org, id), at)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func key(i int) (org, id string) { return fmt.Sprintf("org-%d", i%7), fmt.Sprintf("key_%05d", i) }

// TestInstancesMergeEachOthersUsage runs two instances on a real
// nats-server: each learns the other's uses, a flush never sends more than
// its bound and carries the rest, and a third instance started later
// learns everything from the rollup and the batches after it.
func TestInstancesMergeEachOthersUsage(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := newInstance(t, ctx, env), newInstance(t, ctx, env)
	a.uses.MaxPerFlush = 1000
	minute := time.Now().UTC().Truncate(time.Minute)

	for i := range 2500 {
		org, id := key(i)
		a.uses.Touch(org, id, minute)
	}
	b.uses.Touch("acme", "key_B", minute)

	var carried []int
	for range 3 {
		res, err := a.uses.Flush(ctx, a.store)
		if err != nil {
			t.Fatal(err)
		}
		if res.Uses > 1000 {
			t.Errorf("a flush sent %d uses, over its bound of 1000", res.Uses)
		}
		if res.Messages < 2 {
			t.Errorf("a flush of %d uses in %d message(s), want several of at most 4 KiB", res.Uses, res.Messages)
		}
		if res.Bytes > res.Messages*4096 {
			t.Errorf("%d bytes in %d messages: over 4 KiB each", res.Bytes, res.Messages)
		}
		carried = append(carried, res.Carried)
	}
	if got, want := fmt.Sprint(carried), "[1500 500 0]"; got != want {
		t.Errorf("carried %s, want %s", got, want)
	}
	if _, err := b.uses.Flush(ctx, b.store); err != nil {
		t.Fatal(err)
	}

	waitKnows(t, a, "acme", "key_B", minute)
	for i := range 2500 {
		org, id := key(i)
		waitKnows(t, b, org, id, minute)
	}
	if got := b.uses.LastUsed("org-3", "key_00003"); !got.Equal(minute) {
		t.Errorf("B: last use %s, want the minute %s", got, minute)
	}

	// A rolls up; then B sees a later use, flushed after the rollup.
	if wrote, st, err := a.uses.Rollup(ctx, a.store, true); err != nil || !wrote || st.Uses != 2501 {
		t.Fatalf("rollup: wrote %v, %+v, %v; want 2501 uses", wrote, st, err)
	}
	if wrote, _, err := b.uses.Rollup(ctx, b.store, false); err != nil || wrote {
		t.Errorf("B wrote a rollup (%v, %v) right after A's", wrote, err)
	}
	stream, err := env.JS.Stream(ctx, events.UsageStream)
	if err != nil {
		t.Fatal(err)
	}
	rolledUp := stream.CachedInfo().State.LastSeq
	later := minute.Add(time.Minute)
	b.uses.Touch("acme", "key_B", later)
	if _, err := b.uses.Flush(ctx, b.store); err != nil {
		t.Fatal(err)
	}
	// As if the batches the rollup covers had aged out: C must take them
	// from the rollup, and the later use from the stream.
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(rolledUp+1)); err != nil {
		t.Fatal(err)
	}

	c := newInstance(t, ctx, env)
	waitKnows(t, c, "acme", "key_B", later)
	for i := range 2500 {
		org, id := key(i)
		waitKnows(t, c, org, id, minute)
	}
	if got, want := c.uses.Known(), 2501; got != want {
		t.Errorf("C knows %d keys, want %d", got, want)
	}
}

// TestLegacyBucketIsMergedAndGetsAMaxAge starts on a deployment of an
// earlier version: its per-key bucket is read, not written, and given a
// max age in place.
func TestLegacyBucketIsMergedAndGetsAMaxAge(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: events.UsageBucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	minute := time.Now().UTC().Truncate(time.Minute)
	if _, err := kv.PutString(ctx, "acme.key_OLD", minute.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	in := newInstance(t, ctx, env)
	waitKnows(t, in, "acme", "key_OLD", minute)
	st, err := env.JS.Stream(ctx, "KV_"+events.UsageBucket)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st.CachedInfo().Config.MaxAge, events.UsageLegacyMaxAge; got != want {
		t.Errorf("legacy bucket max age %s, want %s", got, want)
	}
	if n := st.CachedInfo().State.Msgs; n != 1 {
		t.Errorf("the legacy bucket holds %d entries, want its 1, untouched", n)
	}
}
