package http

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// minSeq honours ?min_seq=N on reads: the answer waits until this instance
// has applied sequence N. A sequence the stream does not hold is 400 at
// once: nothing would ever fulfil it. The wait holds no request slot.
func (s *Server) minSeq(r *http.Request) error {
	seq, err := queryUint(r, "min_seq", 0, 0, 1<<63)
	if err != nil || seq == 0 || seq <= s.Runner.Applied() {
		return err
	}
	if err := s.awaitApplied(r.Context(), seq, true); err != nil {
		return err
	}
	if !stateOf(r.Context()).retakeSlot() {
		return domain.Errorf(domain.EUNAVAILABLE, "too many requests at once; retry shortly")
	}
	return nil
}

// awaitApplied waits until this instance has applied seq, within
// WaitTimeout. The request gives its slot back meanwhile and takes one of
// MaxWaiting places instead (503 at once when none is free): requests
// waiting on a lagging instance must not starve those that need no wait.
// The caller takes a slot again if it has more work to do.
//
// With beyondIsInvalid, a seq past the stream's last sequence is EINVALID.
// That sequence is read afresh from the stream, never from memory: another
// instance may have written seq a moment ago. Returns EINVALID or
// EUNAVAILABLE.
func (s *Server) awaitApplied(ctx context.Context, seq uint64, beyondIsInvalid bool) error {
	stateOf(ctx).releaseSlot()
	select {
	case s.waiting <- struct{}{}:
		defer func() { <-s.waiting }()
	default:
		return domain.Errorf(domain.EUNAVAILABLE, "too many requests waiting at once; retry shortly")
	}
	if beyondIsInvalid {
		last, err := s.lastSeq.fresh(ctx)
		if err != nil {
			return domain.Wrap(domain.EUNAVAILABLE, err, fmt.Sprintf("cannot tell yet whether the stream holds sequence %d", seq))
		}
		if seq > last {
			return domain.Errorf(domain.EINVALID, "min_seq %d is beyond the stream's last sequence, %d", seq, last)
		}
	}
	return s.waitFor(ctx, seq)
}

// waitFor waits until the projections hold seq, within WaitTimeout.
func (s *Server) waitFor(ctx context.Context, seq uint64) error {
	ctx, cancel := context.WithTimeout(ctx, s.WaitTimeout)
	defer cancel()
	if err := s.Runner.WaitFor(ctx, seq); err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, fmt.Sprintf("not caught up with sequence %d yet", seq))
	}
	return nil
}

// lastSeqReader asks the stream for its last sequence on behalf of many
// requests at once. Each caller gets the answer of an ask that started
// after it called, so that nothing is judged on a value older than the
// request; callers that come while an ask is out share the next one. At
// most one ask is out at a time, however many requests want one.
type lastSeqReader struct {
	read    func(context.Context) (uint64, error)
	timeout time.Duration

	mu      sync.Mutex
	started uint64 // asks started so far
	out     *lastSeqAsk
}

type lastSeqAsk struct {
	n    uint64 // its number among the asks started
	done chan struct{}
	seq  uint64
	err  error
}

func (l *lastSeqReader) fresh(ctx context.Context) (uint64, error) {
	l.mu.Lock()
	need := l.started + 1 // an ask started from now on
	for {
		a := l.out
		if a == nil {
			l.started++
			a = &lastSeqAsk{n: l.started, done: make(chan struct{})}
			l.out = a
			l.mu.Unlock()
			// Its own deadline: the callers sharing it are not this one's.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.timeout)
			a.seq, a.err = l.read(actx)
			cancel()
			l.mu.Lock()
			l.out = nil
			l.mu.Unlock()
			close(a.done)
			return a.seq, a.err
		}
		l.mu.Unlock()
		select {
		case <-a.done:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		if a.n >= need {
			return a.seq, a.err
		}
		l.mu.Lock()
	}
}
