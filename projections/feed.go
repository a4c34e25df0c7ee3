package projections

import (
	"sync"

	"github.com/keyledger/keyledger/domain"
)

// FeedWindow is how many of the last events applied the runner keeps for
// the readers that follow it (the event streams): a reader at most that
// far behind reads from memory, one further behind from the stream.
const FeedWindow = 4096

// feed keeps the last events the runner applied, in stream order, and
// wakes the watchers of an org when one of its events is applied. Only
// events applied as keyledger's are kept (Data set): what was refused is
// never shown.
type feed struct {
	mu    sync.RWMutex
	ring  []domain.Event // FeedWindow slots, oldest at head once full
	head  int
	n     int
	floor uint64 // every event applied after floor is in the ring
	upTo  uint64 // the last sequence the feed has passed
	watch map[string]map[*watcher]struct{}
}

type watcher struct{ wake chan struct{} }

// pass records that the runner applied e: after its sequence is
// published (Applied), so that a watcher woken finds it applied. While the
// runner catches up (keep false) nothing is kept: no stream is served yet,
// and a replay should not pay for one.
func (f *feed) pass(e domain.Event, keep bool) {
	f.mu.Lock()
	f.upTo = e.Seq
	if !keep {
		f.head, f.n, f.floor = 0, 0, e.Seq
		f.mu.Unlock()
		return
	}
	if e.Data == nil {
		f.mu.Unlock()
		return
	}
	if f.ring == nil {
		f.ring = make([]domain.Event, FeedWindow)
	}
	if f.n < len(f.ring) {
		f.ring[(f.head+f.n)%len(f.ring)] = e
		f.n++
	} else {
		f.floor = f.ring[f.head].Seq
		f.ring[f.head] = e
		f.head = (f.head + 1) % len(f.ring)
	}
	ws := f.watch[e.OrgID]
	for w := range ws {
		select {
		case w.wake <- struct{}{}:
		default: // woken already: it reads everything new when it runs
		}
	}
	f.mu.Unlock()
}

// reset forgets the window: what follows seq is kept again from now on.
// A rebuild calls it, as the events kept were judged under the old trust
// set.
func (f *feed) reset(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.ring)
	f.head, f.n, f.floor, f.upTo = 0, 0, seq, seq
}

// Watch returns a channel that receives a value (at most one waits) each
// time an event of org is applied, and a function that stops it. A
// watcher that does not read misses no event: it reads the window, or the
// stream, from where it last stood.
func (r *Runner) Watch(org string) (<-chan struct{}, func()) {
	f := &r.feed
	w := &watcher{wake: make(chan struct{}, 1)}
	f.mu.Lock()
	if f.watch == nil {
		f.watch = map[string]map[*watcher]struct{}{}
	}
	if f.watch[org] == nil {
		f.watch[org] = map[*watcher]struct{}{}
	}
	f.watch[org][w] = struct{}{}
	f.mu.Unlock()
	return w.wake, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		delete(f.watch[org], w)
		if len(f.watch[org]) == 0 {
			delete(f.watch, org)
		}
	}
}

// Recent returns, from memory, org's events applied after seq that keep
// accepts, oldest first, at most limit of them; next is the last sequence
// looked at, to ask after next time, and more whether the limit cut the
// page short. ok is false when the window no longer reaches back to seq:
// the caller reads the stream instead.
func (r *Runner) Recent(org string, after uint64, limit int, keep func(domain.Event) bool) (evs []domain.Event, next uint64, more, ok bool) {
	f := &r.feed
	f.mu.RLock()
	defer f.mu.RUnlock()
	if after < f.floor {
		return nil, 0, false, false
	}
	// The first kept event after seq: the ring is in stream order.
	lo, hi := 0, f.n
	for lo < hi {
		mid := (lo + hi) / 2
		if f.ring[(f.head+mid)%len(f.ring)].Seq <= after {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	next = max(after, f.upTo)
	for i := lo; i < f.n; i++ {
		e := f.ring[(f.head+i)%len(f.ring)]
		if e.OrgID != org || !keep(e) {
			continue
		}
		if len(evs) == limit {
			return evs, evs[len(evs)-1].Seq, true, true
		}
		evs = append(evs, e)
	}
	return evs, next, false, true
}
