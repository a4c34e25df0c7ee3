package http

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// eventTypes reads a comma-separated list of event types; none: all.
func eventTypes(list string) ([]domain.EventType, error) {
	if list == "" {
		return nil, nil
	}
	var types []domain.EventType
	for _, name := range strings.Split(list, ",") {
		switch t := domain.EventType(name); t {
		case domain.TypeKeyCreated, domain.TypeKeyRotated, domain.TypeKeyRevoked, domain.TypeKeyLeakReported:
			types = append(types, t)
		default:
			return nil, domain.Errorf(domain.EINVALID, "types must list KeyCreated, KeyRotated, KeyRevoked or KeyLeakReported")
		}
	}
	return types, nil
}

// ScopeEventsRead lets a key follow its org's events over SSE.
const ScopeEventsRead = "events:read"

// orgEventStream is GET /v1/orgs/{org}/events/stream, for managers. The
// stream lasts only as long as its caller may manage the org's keys.
func (s *Server) orgEventStream(w http.ResponseWriter, r *http.Request) {
	org := chi.URLParam(r, "org")
	s.streamEvents(w, r, org, caller(r.Context()).ExpiresAt, func() (time.Time, error) {
		p, err := s.authenticate(r)
		if err == nil {
			err = p.MayManage(org)
		}
		return p.ExpiresAt, err
	})
}

// keyEventStream is GET /v1/events/stream, for a key holding events:read:
// the events of that key's own org, never another's, for as long as the
// key may read them.
func (s *Server) keyEventStream(w http.ResponseWriter, r *http.Request) {
	var k domain.Key
	var until time.Time
	if !s.throttled(w, r, func() (err error) { k, until, err = s.bearerKey(r); return err }) {
		return
	}
	if err := mayReadEvents(k); err != nil {
		s.fail(w, r, err)
		return
	}
	s.streamEvents(w, r, k.OrgID, until, func() (time.Time, error) {
		k, until, err := s.bearerKey(r)
		if err == nil {
			err = mayReadEvents(k)
		}
		return until, err
	})
}

func mayReadEvents(k domain.Key) error {
	if !k.HasScope(ScopeEventsRead) {
		return domain.Errorf(domain.EFORBIDDEN, "this key lacks the scope %s", ScopeEventsRead)
	}
	return nil
}

// streamParams reads where a stream starts (Last-Event-ID, else
// ?after_seq=, else now) and which types it carries (?types=, else all).
func (s *Server) streamParams(r *http.Request) (after uint64, types []domain.EventType, err error) {
	after = s.Runner.Applied()
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		if after, err = strconv.ParseUint(id, 10, 64); err != nil {
			return 0, nil, domain.Errorf(domain.EINVALID, "Last-Event-ID must be a stream sequence")
		}
	} else if r.URL.Query().Has("after_seq") {
		if after, err = queryUint(r, "after_seq", 0, 0, 1<<63); err != nil {
			return 0, nil, err
		}
	}
	types, err = eventTypes(r.URL.Query().Get("types"))
	if types == nil {
		types = domain.WebhookEventTypes // key events only: endpoint changes are in the history
	}
	return after, types, err
}

// streamBatch is how many events one write of a stream holds at most.
const streamBatch = 100

// orgEventsAfter reads a batch of org's events after seq: from the
// runner's window of the last events applied when it reaches back that
// far (a live stream, or one resumed a little behind), else from the
// history in the stream, which creates no consumer either.
func (s *Server) orgEventsAfter(ctx context.Context, org string, after uint64, types []domain.EventType) ([]domain.Event, uint64, bool, error) {
	filter := domain.EventFilter{Types: types}
	if evs, next, more, ok := s.Runner.Recent(org, after, streamBatch, filter.Match); ok {
		return evs, next, more, nil
	}
	return s.Log.OrgEvents(ctx, org, domain.EventQuery{After: after, Limit: streamBatch, Budget: s.ScanBudget, Filter: filter})
}

// streamEvents sends org's events as Server-Sent Events, each with its
// stream sequence as id, in order. It reads them at the client's pace
// from the window of events the projections applied last (or, further
// back, from the stream), so nothing is buffered for a slow client: a
// write that takes longer than SlowClientTimeout ends the stream, and the
// client resumes with Last-Event-ID. It wakes only for its own org's
// events (Runner.Watch), and for heartbeats.
//
// The stream lasts as long as its credential: recheck authorizes it again
// before every batch and heartbeat, and the stream ends at until (and at
// whatever end each recheck returns) even while idle. A batch holds only
// events the projections had applied when it was checked, so that an
// event read from the stream after the credential's revocation, but before
// this instance applied that revocation, is never sent.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, org string, until time.Time, recheck func() (time.Time, error)) {
	after, types, err := s.streamParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wake, stop := s.Runner.Watch(org) // before the first read: nothing slips between
	defer stop()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(chunk string) error {
		_ = rc.SetWriteDeadline(time.Now().Add(s.SlowClientTimeout))
		if _, err := fmt.Fprint(w, chunk); err != nil {
			return err
		}
		return rc.Flush()
	}
	// holds re-checks the credential; when it no longer holds, the stream
	// says so and ends (a browser's EventSource then reconnects, gets the
	// 401 or 403, and stops).
	holds := func() bool {
		var cause error
		if !until.IsZero() && !s.Now().Before(until) {
			cause = domain.Errorf(domain.EUNAUTHENTICATED, "the credential expired")
		} else {
			until, cause = recheck()
		}
		if cause == nil {
			return true
		}
		s.log.InfoContext(r.Context(), "event stream ended: its credential no longer holds", "code", domain.ErrorCode(cause))
		_ = write(": the credential of this stream no longer holds\n\n")
		return false
	}
	if write(": keyledger events of "+org+"\n\n") != nil {
		return
	}
	for {
		evs, next, more, err := s.orgEventsAfter(r.Context(), org, after, types)
		if err != nil {
			s.log.WarnContext(r.Context(), "event stream cut: the history cannot be read", "err", err)
			return
		}
		checked := s.Runner.Applied() // what the credential is checked against
		if !holds() {
			return
		}
		ahead := next > checked
		if ahead {
			// Read from the stream ahead of what this instance has applied:
			// those events wait until it has, and are checked then.
			n := 0
			for n < len(evs) && evs[n].Seq <= checked {
				n++
			}
			evs, next, more = evs[:n], max(after, checked), false
		}
		var batch strings.Builder
		for _, e := range evs {
			env, err := events.ToEnvelope(e)
			if err != nil {
				continue
			}
			data, _ := json.Marshal(env)
			fmt.Fprintf(&batch, "id: %d\nevent: %s\ndata: %s\n\n", e.Seq, e.Type, data)
		}
		after = next
		if batch.Len() > 0 && write(batch.String()) != nil {
			return
		}
		if more {
			continue
		}
		wait := s.Heartbeat
		if !until.IsZero() {
			wait = max(0, min(wait, until.Sub(s.Now())))
		}
		if !s.waitForOrg(r.Context(), wake, wait, ahead, checked) {
			if r.Context().Err() != nil || !holds() || write(": heartbeat\n\n") != nil {
				return
			}
		}
	}
}

// waitForOrg waits up to wait for an event of the stream's org (wake),
// or, when the stream read ahead of this instance, for the next event
// applied after checked; false when wait passed, or the request ended.
func (s *Server) waitForOrg(ctx context.Context, wake <-chan struct{}, wait time.Duration, ahead bool, checked uint64) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if ahead {
		return s.Runner.WaitFor(ctx, checked+1) == nil
	}
	select {
	case <-wake:
		return true
	case <-ctx.Done():
		return false
	}
}
