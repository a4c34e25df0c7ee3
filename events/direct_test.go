package events_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// countedStore opens the store on env's server through a client whose
// consumer creations are counted.
func countedStore(t *testing.T, env *natstest.Env) (*events.Store, *events.ConsumerCount) {
	t.Helper()
	var n events.ConsumerCount
	js, err := jetstream.New(env.Embedded.Conn, n.Trace())
	if err != nil {
		t.Fatal(err)
	}
	s, err := events.Open(testCtx(t), js, env.Config(natstest.Quiet()))
	if err != nil {
		t.Fatal(err)
	}
	return s, &n
}

// TestReadsCreateNoConsumer: loading a key whose history spans several
// direct-get batches, deciding on it, and reading pages of the org's
// history ask NATS for no consumer; following the stream asks for one,
// and the count says so.
func TestReadsCreateNoConsumer(t *testing.T) {
	env := natstest.Start(t)
	s, created := countedStore(t, env)
	ctx := testCtx(t)
	k := mustCreate(t, s, "acme")
	const rotations = 300 // more than one batch of 256
	for range rotations {
		if _, err := s.UpdateFromHistory(ctx, "acme", k.KeyID, rotateNow); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, s, "globex")
	evs := mustLoad(t, s, "acme", k.KeyID)
	if got, want := len(evs), rotations+1; got != want {
		t.Fatalf("Load: %d events, want %d", got, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq || evs[i].PrevHash != evs[i-1].Hash {
			t.Fatalf("event %d (seq %d) does not follow seq %d", i, evs[i].Seq, evs[i-1].Seq)
		}
	}
	var all []domain.Event
	for after, more := uint64(0), true; more; {
		var page []domain.Event
		var err error
		page, after, more, err = s.OrgEvents(ctx, "acme", domain.EventQuery{After: after, Limit: 40})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
	}
	if got, want := len(all), rotations+1; got != want {
		t.Errorf("pages of acme's history: %d events, want %d", got, want)
	}
	if got := created.Created(); got != 0 {
		t.Errorf("reads created %d consumers, want none", got)
	}

	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan struct{})
	go func() {
		_ = s.Follow(fctx, 1, func(domain.Event) error {
			select {
			case seen <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	select {
	case <-seen:
	case <-time.After(10 * time.Second):
		t.Fatal("the feed delivered nothing")
	}
	cancel()
	if got := created.Created(); got != 1 {
		t.Errorf("following the stream created %d consumers, want 1", got)
	}
}

// TestStreamWithoutDirectGetsIsStillRead: a stream an operator made
// without allow_direct is used as it is (never changed); reads fall back
// to a consumer each.
func TestStreamWithoutDirectGetsIsStillRead(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	stream, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	// Updated in place rather than deleted and made again: a create right
	// after a delete can meet the old stream's files still being removed
	// ("error creating store for stream").
	cfg := stream.CachedInfo().Config
	cfg.AllowDirect = false
	if _, err := env.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s, created := countedStore(t, env)
	k := mustCreate(t, s, "acme")
	if _, err := s.UpdateFromHistory(ctx, "acme", k.KeyID, rotateNow); err != nil {
		t.Fatal(err)
	}
	if got := len(mustLoad(t, s, "acme", k.KeyID)); got != 2 {
		t.Errorf("Load: %d events, want 2", got)
	}
	if created.Created() == 0 {
		t.Error("reads of a stream without direct gets created no consumer: they cannot have read it")
	}
	after, err := env.JS.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if after.CachedInfo().Config.AllowDirect {
		t.Error("opening the store changed the stream")
	}
}

// TestScanOfEveryEventAsksForNoSubjectFilter: a scan of every event (the
// checkpointer's) asks the server for messages by sequence alone and
// drops the checkpoints itself. A wildcard subject filter would cost the
// server a walk of every subject it stores for each message it answers:
// on a stream of a million keys, minutes for one catch-up.
func TestScanOfEveryEventAsksForNoSubjectFilter(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	for range 3 {
		for range 5 {
			mustCreate(t, env.Store, "acme")
		}
		if _, _, err := (&events.Checkpointer{Store: env.Store}).Once(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, env.Store, "acme")

	asked := make(chan []byte, 100)
	sub, err := env.Embedded.Conn.Subscribe("$JS.API.DIRECT.GET."+events.StreamName, func(m *nats.Msg) { asked <- m.Data })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := env.Embedded.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	err = env.Store.Scan(ctx, events.SubjectRoot+".>", 1, func(m events.Msg) error {
		if !m.IsEvent() {
			t.Errorf("the scan of events gave the checkpoint at %d", m.Seq)
		}
		seqs = append(seqs, m.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 16 || !slices.IsSorted(seqs) {
		t.Errorf("scanned %v, want the 16 events in order", seqs)
	}
	if len(asked) == 0 {
		t.Fatal("no direct get was seen")
	}
	for len(asked) > 0 {
		var req map[string]any
		if err := json.Unmarshal(<-asked, &req); err != nil {
			t.Fatal(err)
		}
		if f, ok := req["next_by_subj"]; ok {
			t.Errorf("a scan of every event asked with the subject filter %v", f)
		}
	}
}
