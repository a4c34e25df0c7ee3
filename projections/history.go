package projections

import (
	"slices"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// History keeps every event, by key and by org, oldest first.
type History struct {
	seqMark
	mu    sync.RWMutex
	byKey map[string][]*domain.Event // by org/id
	byOrg map[string][]*domain.Event
}

// NewHistory returns an empty history.
func NewHistory() *History {
	return &History{byKey: map[string][]*domain.Event{}, byOrg: map[string][]*domain.Event{}}
}

// Apply records one event. Events of unknown types are not kept: this code
// could not show them faithfully.
func (h *History) Apply(e domain.Event) error {
	defer h.mark(e.Seq)
	if e.Data == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	ref := e.OrgID + "/" + e.KeyID
	h.byKey[ref] = append(h.byKey[ref], &e)
	h.byOrg[e.OrgID] = append(h.byOrg[e.OrgID], &e)
	return nil
}

// Key returns the events of one key, oldest first.
func (h *History) Key(org, id string) []domain.Event {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return copyEvents(h.byKey[org+"/"+id])
}

// Each calls fn with every event of org, oldest first, under the read lock.
func (h *History) Each(org string, fn func(domain.Event)) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, e := range h.byOrg[org] {
		fn(*e)
	}
}

// EventFilter selects events; its zero value selects all.
type EventFilter struct {
	Types   []domain.EventType
	KeyID   string
	ActorID string
	Since   time.Time // occurred at or after
	Until   time.Time // occurred before
}

func (f EventFilter) match(e *domain.Event) bool {
	return (len(f.Types) == 0 || slices.Contains(f.Types, e.Type)) &&
		(f.KeyID == "" || e.KeyID == f.KeyID) &&
		(f.ActorID == "" || e.Actor.ID == f.ActorID) &&
		(f.Since.IsZero() || !e.OccurredAt.Before(f.Since)) &&
		(f.Until.IsZero() || e.OccurredAt.Before(f.Until))
}

// Org returns up to limit events of org with a sequence above after that
// match f, oldest first; the sequence to ask after next (after itself when
// nothing more was looked at); and whether more events were left unread.
func (h *History) Org(org string, after uint64, limit int, f EventFilter) (page []domain.Event, next uint64, more bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	all := h.byOrg[org]
	i, _ := slices.BinarySearchFunc(all, after+1, func(e *domain.Event, seq uint64) int {
		switch {
		case e.Seq < seq:
			return -1
		case e.Seq > seq:
			return 1
		}
		return 0
	})
	next = after
	for ; i < len(all); i++ {
		if len(page) == limit {
			return page, next, true
		}
		if e := all[i]; f.match(e) {
			page = append(page, *e)
		}
		next = all[i].Seq
	}
	return page, next, false
}

func copyEvents(ptrs []*domain.Event) []domain.Event {
	out := make([]domain.Event, len(ptrs))
	for i, e := range ptrs {
		out[i] = *e
	}
	return out
}
