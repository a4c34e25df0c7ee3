package projections_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/projections"
)

// gate is a projection beside the table (as the webhook registry and the
// snapshotter are) that holds the feed at one sequence until opened, and
// keeps every sequence it was given.
type gate struct {
	at   uint64
	open chan struct{}
	mu   sync.Mutex
	seen []uint64
}

func (g *gate) Apply(e domain.Event) error {
	if e.Seq == g.at {
		<-g.open
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen = append(g.seen, e.Seq)
	return nil
}

func (g *gate) LastSeq() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) == 0 {
		return 0
	}
	return g.seen[len(g.seen)-1]
}

// slowAfter is a stream that hands out each event after seq a while
// late, outside the runner's lock: whoever waits for that lock (a
// rebuild) gets it between two events.
type slowAfter struct {
	projections.Source
	seq uint64
}

func (s slowAfter) Follow(ctx context.Context, from uint64, fn func(domain.Event) error) error {
	return s.Source.Follow(ctx, from, func(e domain.Event) error {
		if e.Seq > s.seq {
			time.Sleep(200 * time.Millisecond)
		}
		return fn(e)
	})
}

// A rebuild's fresh table may get ahead of the feed: swapping it in used
// to move the feed to where the fresh table stood, and the projections
// beside the table never saw the events between (a WebhookDisabled the
// registry missed kept an endpoint delivering).
func TestRebuildAheadOfTheFeedSkipsNothingForTheOtherProjections(t *testing.T) {
	env := natstest.Start(t)
	keys := newKeys(env)
	mustCreateKey(t, keys, "acme")
	table := projections.NewTable()
	g := &gate{at: 3, open: make(chan struct{})}
	r := projections.NewRunner(slowAfter{env.Store, 3}, natstest.Quiet(), table, g)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = r.Run(ctx) }()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := r.WaitFor(wctx, 1); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		mustCreateKey(t, keys, "acme") // 2 to 5: the feed stops at 3
	}
	rebuilt := make(chan error, 1)
	go func() { rebuilt <- r.Rebuild(ctx) }()
	// Let the rebuild's own feed read to the stream's end while the main
	// feed is held: it then waits for the main feed's lock, ahead of it.
	time.Sleep(time.Second)
	close(g.open)
	select {
	case err := <-rebuilt:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the rebuild never ended")
	}
	if err := r.WaitFor(wctx, 5); err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !slices.Equal(g.seen, []uint64{1, 2, 3, 4, 5}) {
		t.Errorf("the projection beside the table was given %v, want every event 1 to 5", g.seen)
	}
}
