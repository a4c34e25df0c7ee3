package projections

import (
	"context"
	"log/slog"
	"slices"
	"time"
)

// rebuildWhenDue rebuilds the table each time the trust set changes,
// until ctx ends.
func (r *Runner) rebuildWhenDue(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.rebuilds:
		}
		if err := r.Rebuild(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("the projections could not be judged again under the new trust set; restart this instance", "err", err)
		}
	}
}

// Rebuild judges every event again under the source's trust set as it now
// stands: it replays the stream into a fresh table beside the one in use,
// which keeps answering, and swaps it in once it has caught up. A trust
// set that now retires a key drops what that key signed after its
// retirement; one that now trusts a key takes what it signed, in its
// place in each key's history. The events judged otherwise than before are
// logged.
func (r *Runner) Rebuild(ctx context.Context) error {
	table := r.table()
	if table == nil {
		return nil
	}
	start := time.Now()
	fresh := NewTable()
	// Its own refusals are told once, by logRejudged: a quiet logger; and
	// the source without its watch: the rebuild watches nothing.
	sub := NewRunner(struct{ Source }{r.src}, slog.New(slog.DiscardHandler), fresh)
	subCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = sub.Run(subCtx) }()
	stop := func() { cancel(); <-done }
	if err := sub.WaitReady(ctx); err != nil {
		stop()
		return err
	}
	for {
		if err := sub.WaitFor(ctx, r.Applied()); err != nil {
			stop()
			return err
		}
		r.applying.Lock()
		if sub.Applied() < r.Applied() {
			r.applying.Unlock() // the feed moved on meanwhile
			continue
		}
		stop()
		before := slices.Clone(table.rejected)
		img, seq := fresh.image()
		// The fresh table may be ahead of the feed: the feed goes on from
		// where it stands, for the other projections (the webhook
		// registry, the snapshots) as for the table, which skips what it
		// already holds. Moving the feed to seq would have them miss the
		// events between.
		table.install(img, seq)
		r.feed.reset(r.Applied()) // what it kept was judged under the old trust set
		r.applying.Unlock()
		r.logRejudged(before, img.rejected)
		r.log.Info("the projections were judged again under the new trust set", "up_to_seq", seq, "took", time.Since(start))
		return nil
	}
}

// table is the key table the runner feeds, if any.
func (r *Runner) table() *Table {
	for _, p := range r.projs {
		switch t := p.(type) {
		case *Table:
			return t
		case *VerifyIndex:
			return t.t
		case *Listing:
			return t.t
		}
	}
	return nil
}

// logRejudged says which events a rebuild judged otherwise.
func (r *Runner) logRejudged(before, after []uint64) {
	for _, seq := range after {
		if _, was := slices.BinarySearch(before, seq); !was {
			r.rejected.Add(1)
			r.log.Error("refusing an event the new trust set does not vouch for: it is no longer applied (keyledger audit verify names it)", "seq", seq)
		}
	}
	for _, seq := range before {
		if _, still := slices.BinarySearch(after, seq); !still {
			r.log.Info("taking an event the new trust set vouches for", "seq", seq)
		}
	}
}
