// Package projections builds what is read from memory — the masked
// listing and the verify index — as folds over the event stream, applied in
// stream order from one ordered consumer. Each can be rebuilt from sequence
// 1 and knows the last sequence it applied. The history is not held: it is
// read from the stream on demand (events.Store), and AsOf folds it for an
// instant.
package projections

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// Projection is a fold over the stream. Apply is called with every event in
// stream order, once; events of unknown types, and events the runner
// refused (not Trusted: no keyledger instance wrote them), come with nil
// Data.
type Projection interface {
	Apply(e domain.Event) error
	LastSeq() uint64
}

// Rejecter is a projection that keeps which events were refused, so that
// reads of the history can leave them out without judging them again.
type Rejecter interface {
	Reject(seq uint64)
}

// Source is the stream, as the projections need it.
type Source interface {
	Follow(ctx context.Context, from uint64, fn func(domain.Event) error) error
	LastSeq(ctx context.Context) (uint64, error)
}

// Runner feeds one ordered stream of events to several projections and lets
// readers wait until a sequence has been applied (read-your-writes).
type Runner struct {
	src   Source
	projs []Projection
	log   *slog.Logger

	applying sync.Mutex // one event at a time, from the feed or from Offer

	mu       sync.Mutex
	applied  uint64
	advance  chan struct{} // closed, and replaced, whenever applied moves
	ready    atomic.Bool
	target   atomic.Uint64 // the stream's last sequence when Run started
	started  atomic.Bool   // target is known: Offer may apply
	rejected atomic.Uint64
	rebuilds chan struct{} // a rebuild is due

	// WatchEvery is how often the runner asks the stream how far it goes
	// (1s when zero): see CurrentAt. Set it before Run.
	WatchEvery time.Duration
	current    atomic.Int64           // Unix nanoseconds: when it last held all the stream held
	broken     atomic.Pointer[string] // why the stream is not the one applied: see Broken
	feedMu     sync.Mutex
	cutFeed    context.CancelFunc
	feed       feed // the last events applied, for the event streams (Watch, Recent)
}

// NewRunner returns a runner for projs over src. When src says so
// (WatchSigners), a change of the trust set has the table judged again:
// see Rebuild.
func NewRunner(src Source, log *slog.Logger, projs ...Projection) *Runner {
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{src: src, projs: projs, log: log, advance: make(chan struct{}), rebuilds: make(chan struct{}, 1)}
	if w, ok := src.(interface{ WatchSigners(func()) }); ok {
		w.WatchSigners(func() {
			select {
			case r.rebuilds <- struct{}{}:
			default: // one is due already
			}
		})
	}
	return r
}

// Run catches up with the stream and then follows it until ctx ends. It is
// ready once it has applied every event that was in the stream when it
// started. A broken subscription is resumed after the last applied event.
func (r *Runner) Run(ctx context.Context) error {
	target, err := r.catchUpTarget(ctx)
	if err != nil {
		return err
	}
	r.target.Store(target)
	if target <= r.Applied() {
		r.ready.Store(true)
	}
	r.started.Store(true)
	r.current.Store(time.Now().UnixNano())
	go r.rebuildWhenDue(ctx)
	go r.watch(ctx)
	for {
		fctx, cancel := context.WithCancel(ctx)
		r.feedMu.Lock()
		r.cutFeed = cancel
		r.feedMu.Unlock()
		err := r.src.Follow(fctx, r.Applied()+1, func(e domain.Event) error {
			r.apply(e)
			return nil
		})
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.log.Warn("projection feed broke; resuming", "after_seq", r.Applied(), "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (r *Runner) catchUpTarget(ctx context.Context) (uint64, error) {
	for {
		target, err := r.src.LastSeq(ctx)
		if err == nil {
			return target, nil
		}
		r.log.Warn("cannot read the stream's last sequence; retrying", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

func (r *Runner) apply(e domain.Event) {
	r.applying.Lock()
	defer r.applying.Unlock()
	if e.Seq <= r.Applied() {
		return // offered already, or a redelivery after a resume
	}
	r.applyLocked(e)
}

// Offer applies e at once if it is the very next event, as a command path
// offers the event it just appended (events.Store.OnAppended): the write's
// answer then need not wait for the event to come back through the feed,
// which skips it when it does. Any other event is left to the feed.
func (r *Runner) Offer(e domain.Event) {
	r.applying.Lock()
	defer r.applying.Unlock()
	if !r.started.Load() || e.Seq != r.Applied()+1 {
		return
	}
	r.applyLocked(e)
}

func (r *Runner) applyLocked(e domain.Event) {
	if !e.Trusted {
		r.reject(e)
		e.Data = nil
	}
	for _, p := range r.projs {
		err := p.Apply(e)
		switch {
		case errors.Is(err, ErrRefused) && e.Data != nil:
			r.reject(e) // signed, but no key's: not applied anywhere
			e.Data = nil
		case err != nil:
			r.log.Error("projection skipped an event", "seq", e.Seq, "event_id", e.ID, "err", err)
		}
	}
	if e.Seq >= r.target.Load() {
		r.ready.Store(true) // before waking WaitFor: readers see it ready
	}
	r.mu.Lock()
	r.applied = e.Seq
	close(r.advance)
	r.advance = make(chan struct{})
	r.mu.Unlock()
	r.feed.pass(e, r.ready.Load())
}

// reject refuses an event no keyledger instance wrote: it is counted and
// logged, once, and never applied. Only its sequence and type are logged:
// the rest is whatever its author chose to write.
func (r *Runner) reject(e domain.Event) {
	r.rejected.Add(1)
	t := string(e.Type)
	switch e.Type {
	case domain.TypeKeyCreated, domain.TypeKeyRotated, domain.TypeKeyRevoked, domain.TypeKeyLeakReported:
	default:
		t = "unreadable or unknown"
	}
	r.log.Error("refusing an event no trusted keyledger instance wrote: it is not applied (keyledger audit verify names it)", "seq", e.Seq, "type", t)
	for _, p := range r.projs {
		if rj, ok := p.(Rejecter); ok {
			rj.Reject(e.Seq)
		}
	}
}

// Rejected counts the events refused since the runner started.
func (r *Runner) Rejected() uint64 { return r.rejected.Load() }

// ResumeAfter makes Run start after seq, which every projection already
// holds (restored from a snapshot). Call it before Run.
func (r *Runner) ResumeAfter(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applied = seq
	r.feed.reset(seq)
}

// Applied returns the last sequence applied to every projection.
func (r *Runner) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

// Ready reports whether the projections have caught up with the stream as
// it was at start.
func (r *Runner) Ready() bool { return r.ready.Load() && r.Broken() == "" }

// StreamTruncated is why a runner is broken whose stream ends before what
// it applied.
const StreamTruncated = "the stream ends before what this instance applied: it was truncated, or deleted and written again"

// Broken says why the stream under the runner is no longer the one it
// applied, for good: StreamTruncated, or what the source says when it
// tells (events.Store.StreamLost: the stream deleted, or replaced). ""
// while it is.
func (r *Runner) Broken() string {
	if why := r.broken.Load(); why != nil {
		return *why
	}
	return ""
}

func (r *Runner) breakFor(why string) bool { return r.broken.CompareAndSwap(nil, &why) }

// StreamLastSeq asks the stream for its last sequence.
func (r *Runner) StreamLastSeq(ctx context.Context) (uint64, error) { return r.src.LastSeq(ctx) }

// Behind returns how many sequences the stream holds beyond the last one
// applied: how stale the projections may be.
func (r *Runner) Behind(ctx context.Context) (uint64, error) {
	last, err := r.src.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	return last - min(last, r.Applied()), nil
}

// WaitReady returns once Ready, or with ctx's error.
func (r *Runner) WaitReady(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !r.Ready() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// WaitFor returns once seq has been applied, or with ctx's error.
func (r *Runner) WaitFor(ctx context.Context, seq uint64) error {
	for {
		r.mu.Lock()
		applied, advance := r.applied, r.advance
		r.mu.Unlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-advance:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// seqMark is embedded by projections to remember their last sequence.
type seqMark struct{ last atomic.Uint64 }

func (m *seqMark) mark(seq uint64) { m.last.Store(seq) }

// LastSeq returns the last sequence this projection applied.
func (m *seqMark) LastSeq() uint64 { return m.last.Load() }

// CurrentAt is when the runner was last seen to hold everything the stream
// held a moment before (it asks every WatchEvery): how long answers from
// the projections may have missed what happened since. A feed cut off, or
// stalled (a consumer paused by someone who may), leaves it in the past.
func (r *Runner) CurrentAt() time.Time { return time.Unix(0, r.current.Load()) }

// watch asks the stream how far it goes, every WatchEvery, until ctx ends:
// each time the runner has applied all it held at the previous ask, it is
// current. A feed that holds back for several asks while the stream is
// ahead is cut and started again. A stream that ends before what the
// runner applied was truncated or written again: the runner stops being
// ready, for good, and says so.
func (r *Runner) watch(ctx context.Context) {
	every := r.WatchEvery
	if every <= 0 {
		every = time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	var held uint64 // the stream's last sequence at the previous ask
	stalled, short := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// Applied before the stream is asked: read after, it may hold
		// events appended (and offered) since the stream answered, which
		// would look like a stream that ends before them.
		applied := r.Applied()
		actx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		last, err := r.src.LastSeq(actx)
		cancel()
		if err != nil {
			// The source may know the stream is gone (it logs that): then
			// this is not an outage to wait out.
			if l, ok := r.src.(interface{ StreamLost() string }); ok {
				if why := l.StreamLost(); why != "" {
					r.breakFor(why)
				}
			}
			continue // cut off: CurrentAt stays where it was
		}
		if !r.ready.Load() {
			held = last // still replaying: neither current nor stalled
			continue
		}
		if last >= applied {
			short = 0
		}
		switch {
		case last < applied:
			// Three asks in a row, not one answer from a server that lags.
			if short++; short < 3 {
				continue
			}
			if r.breakFor(StreamTruncated) {
				r.log.Error(StreamTruncated+"; refusing to serve (restart once the stream is known to be right)", "stream_last_seq", last, "applied_seq", applied)
			}
		case applied >= held:
			r.current.Store(time.Now().UnixNano())
			stalled = 0
		default:
			if stalled++; stalled == 5 {
				r.log.Warn("the projection feed holds back while the stream is ahead; starting it again", "applied_seq", applied, "stream_last_seq", last)
				r.feedMu.Lock()
				if r.cutFeed != nil {
					r.cutFeed()
				}
				r.feedMu.Unlock()
				stalled = 0
			}
		}
		held = last
	}
}
