package projections

import (
	"slices"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// KeyAt is a key as it stood at an instant: its state from the events that
// had occurred by then, and who had last changed it.
type KeyAt struct {
	Key           domain.Key
	Status        domain.Status
	LastChangedBy domain.Actor
	LastChangedAt time.Time
}

// Valid reports whether the key's current secret then verified.
func (k KeyAt) Valid() bool { return k.Status == domain.StatusActive }

// AsOf folds events, in stream order, into the keys of one org as they
// stood at an instant. Feed it with Apply, read it with Keys; memory grows
// with the number of keys, not of events.
type AsOf struct {
	org  string
	at   time.Time
	keys map[string]*KeyAt
}

// NewAsOf returns an empty fold for org at instant at.
func NewAsOf(org string, at time.Time) *AsOf {
	return &AsOf{org: org, at: at, keys: map[string]*KeyAt{}}
}

// Apply folds e in if it is org's and had occurred by the instant.
func (a *AsOf) Apply(e domain.Event) error {
	if e.Data == nil || e.OrgID != a.org || e.OccurredAt.After(a.at) || domain.IsWebhookType(e.Type) {
		return nil
	}
	k := a.keys[e.KeyID]
	if k == nil {
		if _, ok := e.Data.(domain.KeyCreated); !ok {
			return nil // its creation is not in view: a corrupt stream
		}
		k = &KeyAt{}
		a.keys[e.KeyID] = k
	}
	if err := k.Key.Apply(e); err != nil {
		return err
	}
	k.LastChangedBy, k.LastChangedAt = e.Actor, e.OccurredAt
	return nil
}

// Keys returns the keys, oldest first, with their status at the instant.
func (a *AsOf) Keys() []KeyAt {
	out := make([]KeyAt, 0, len(a.keys))
	for _, k := range a.keys {
		k.Status = k.Key.Status(a.at)
		out = append(out, *k)
	}
	slices.SortFunc(out, func(x, y KeyAt) int {
		switch {
		case x.Key.ID < y.Key.ID:
			return -1
		case x.Key.ID > y.Key.ID:
			return 1
		}
		return 0
	})
	return out
}
