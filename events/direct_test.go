package events_test

import (
	"context"
	"testing"
	"time"

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
