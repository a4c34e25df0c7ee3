package projections

import (
	"slices"
	"sync"

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

// Org returns up to limit events of an org with a sequence above after,
// oldest first, and the sequence to ask after next (after itself when
// there is nothing more yet).
func (h *History) Org(org string, after uint64, limit int) ([]domain.Event, uint64) {
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
	page := copyEvents(all[i:min(len(all), i+limit)])
	if len(page) > 0 {
		after = page[len(page)-1].Seq
	}
	return page, after
}

func copyEvents(ptrs []*domain.Event) []domain.Event {
	out := make([]domain.Event, len(ptrs))
	for i, e := range ptrs {
		out[i] = *e
	}
	return out
}
