package http

import (
	"context"
	"encoding/json"
	"errors"
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
		case domain.TypeKeyCreated, domain.TypeKeyRotated, domain.TypeKeyRevoked:
			types = append(types, t)
		default:
			return nil, domain.Errorf(domain.EINVALID, "types must list KeyCreated, KeyRotated or KeyRevoked")
		}
	}
	return types, nil
}

// ScopeEventsRead lets a key follow its org's events over SSE.
const ScopeEventsRead = "events:read"

// orgEventStream is GET /v1/orgs/{org}/events/stream, for managers.
func (s *Server) orgEventStream(w http.ResponseWriter, r *http.Request) {
	s.streamEvents(w, r, chi.URLParam(r, "org"))
}

// keyEventStream is GET /v1/events/stream, for a key holding events:read:
// the events of that key's own org, never another's.
func (s *Server) keyEventStream(w http.ResponseWriter, r *http.Request) {
	var k domain.Key
	if !s.throttled(w, r, func() (err error) { k, err = s.bearerKey(r); return err }) {
		return
	}
	if !k.HasScope(ScopeEventsRead) {
		s.fail(w, r, domain.Errorf(domain.EFORBIDDEN, "this key lacks the scope %s", ScopeEventsRead))
		return
	}
	s.streamEvents(w, r, k.OrgID)
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
	return after, types, err
}

// streamEvents sends org's events as Server-Sent Events, each with its
// stream sequence as id, in order. It reads them from the history at the
// client's pace from the stream, so nothing is buffered for a slow client: a write that
// takes longer than SlowClientTimeout ends the stream, and the client
// resumes with Last-Event-ID.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, org string) {
	after, types, err := s.streamParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
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
	if write(": keyledger events of "+org+"\n\n") != nil {
		return
	}
	for {
		applied := s.Runner.Applied() // before reading: nothing slips between
		evs, next, more, err := s.Log.OrgEvents(r.Context(), org, domain.EventQuery{After: after, Limit: 100, Budget: s.ScanBudget, Filter: domain.EventFilter{Types: types}})
		if err != nil {
			s.log.WarnContext(r.Context(), "event stream cut: the history cannot be read", "err", err)
			return
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
		ctx, cancel := context.WithTimeout(r.Context(), s.Heartbeat)
		err = s.Runner.WaitFor(ctx, applied+1)
		cancel()
		switch {
		case r.Context().Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			if write(": heartbeat\n\n") != nil {
				return
			}
		}
	}
}
