package verifier

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// An edge site follows a mirror of KEYLEDGER, copied across a leaf node
// from the main site. A mirror that has lost its link holds still, so
// "the verifier holds everything the mirror holds" no longer says it is
// current: the mirror's own account of its origin (when it last heard
// from it, how far behind it is) has to say so too.
const (
	// mirrorSilence is how long a mirror may go without a message or a
	// heartbeat from its origin (nats-server sends one every second)
	// before it counts as cut off.
	mirrorSilence = 3 * time.Second
	// mirrorSettle is how long a mirror must stay in touch and caught up
	// before the verifier takes its word again after a cut, or at start.
	// nats-server counts a mirror as heard from as soon as it makes its
	// consumer again, before the backlog's first message has told it how
	// far behind it is: for that moment it reports no lag while it lacks
	// what happened during the cut.
	mirrorSettle = 2 * time.Second
)

// feed is the stream as the verifier follows it: the event store, whose
// LastSeq also notes, on a mirror, when the mirror last held everything
// its origin held.
type feed struct {
	*events.Store
	stream jetstream.Stream

	mu     sync.Mutex
	mirror bool
	lag    uint64
	steady time.Time // when the current run of asks finding the mirror in touch and caught up began
	heard  time.Time // when the mirror was last known to hold everything its origin held
}

// LastSeq asks the stream for its last sequence, and, on a mirror, how
// it stands with its origin.
func (f *feed) LastSeq(ctx context.Context) (uint64, error) {
	info, err := f.stream.Info(ctx)
	if err != nil {
		return 0, domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
	}
	f.observe(info.Mirror, time.Now())
	return info.State.LastSeq, nil
}

func (f *feed) observe(m *jetstream.StreamSourceInfo, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mirror = m != nil
	if m == nil {
		return
	}
	f.lag = m.Lag
	if m.Active < 0 || m.Active > mirrorSilence || m.Lag > 0 || m.Error != nil {
		f.steady = time.Time{}
		return
	}
	if f.steady.IsZero() {
		f.steady = now
	}
	if now.Sub(f.steady) >= mirrorSettle {
		f.heard = now.Add(-m.Active)
	}
}

// origin returns whether the stream is a mirror, when it was last known
// to hold everything its origin held (zero: not yet), and how many of
// the origin's messages it has yet to copy, as it last said.
func (f *feed) origin() (mirror bool, heard time.Time, lag uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mirror, f.heard, f.lag
}
