package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
)

// startup runs the steps of a start that need NATS. serve's waits: each
// step is tried until it works (NATS unreachable, no JetStream leader
// yet, a bucket another instance is creating, not enough servers yet for
// the replicas asked), with a capped, jittered backoff and a log line per
// failed try, and /readyz says meanwhile what it waits for. Only a lasting
// refusal (events.Lasting: an unfit stream or bucket, a credential
// refused or denied) ends it. The other commands try once.
type startup struct {
	log *slog.Logger
	// page shows the step under way on /readyz; nil: nowhere.
	page *khttp.Starting
	// once: one try, bounded by each; otherwise each bounds one try, and
	// tries go on until ctx ends.
	once  bool
	each  time.Duration
	first time.Duration // the first wait between tries, doubled up to most
	most  time.Duration

	mu     sync.Mutex
	cancel context.CancelCauseFunc // the try under way
	denied error
}

// waitingStartup is serve's.
func waitingStartup(log *slog.Logger, page *khttp.Starting) *startup {
	return &startup{log: log, page: page, each: 10 * time.Second, first: 100 * time.Millisecond, most: 5 * time.Second}
}

// onceStartup is every other command's: one try, as before there was a
// wait.
func onceStartup(log *slog.Logger) *startup {
	return &startup{log: log, once: true, each: 30 * time.Second}
}

// deny ends the try under way, and every later one, with err: a request
// denied by NATS goes unanswered, and the server says why only in an
// asynchronous error.
func (s *startup) deny(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.denied = err
	if s.cancel != nil {
		s.cancel(err)
	}
}

// step runs fn until it works, or returns its lasting error, or ctx's.
// what names the step for the log and /readyz ("stream KEYLEDGER").
func (s *startup) step(ctx context.Context, what string, fn func(context.Context) error) error {
	if s.page != nil {
		s.page.Waiting(what, 0, "")
	}
	wait := s.first
	for attempt := 1; ; attempt++ {
		err := s.try(ctx, fn)
		if err == nil {
			return nil
		}
		if s.once || events.Lasting(err) || ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
				err = fmt.Errorf("%w (%v)", err, cause)
			}
			return err
		}
		reason := events.WaitReason(err)
		d := wait/2 + rand.N(wait/2+1) // jitter: instances started together do not ask together
		s.log.Warn("waiting for "+what, "attempt", attempt, "reason", reason, "retry_in", d.Round(time.Millisecond).String(), "err", err)
		if s.page != nil {
			s.page.Waiting(what, attempt, reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, context.Cause(ctx))
		case <-time.After(d):
		}
		wait = min(2*wait, s.most)
	}
}

func (s *startup) try(ctx context.Context, fn func(context.Context) error) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.mu.Lock()
	if s.denied != nil {
		s.mu.Unlock()
		return s.denied
	}
	s.cancel = cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.cancel = nil
		s.mu.Unlock()
	}()
	tctx, cancelTimeout := context.WithTimeout(tctx, s.each)
	defer cancelTimeout()
	err := fn(tctx)
	if cause := context.Cause(tctx); err != nil && cause != nil && errors.Is(cause, nats.ErrPermissionViolation) {
		err = fmt.Errorf("%w (%w)", err, cause) // lasting
	}
	return err
}
