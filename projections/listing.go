package projections

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// applyKey evolves the key an event is about, creating it on KeyCreated. It
// returns the key, or nil for events that change no key.
func applyKey(keys map[string]*domain.Key, e domain.Event) (*domain.Key, error) {
	if e.Data == nil {
		return nil, nil
	}
	ref := e.OrgID + "/" + e.KeyID
	k := keys[ref]
	if k == nil {
		if _, ok := e.Data.(domain.KeyCreated); !ok {
			return nil, fmt.Errorf("%s for unknown key %s", e.Type, ref)
		}
		k = &domain.Key{}
	}
	if err := k.Apply(e); err != nil {
		return nil, err
	}
	keys[ref] = k
	return k, nil
}

// Listing is the masked listing of each org's keys, newest first.
type Listing struct {
	seqMark
	mu   sync.RWMutex
	keys map[string]*domain.Key // by org/id
	ids  map[string][]string    // per org, key ids in ascending order
}

// NewListing returns an empty listing.
func NewListing() *Listing {
	return &Listing{keys: map[string]*domain.Key{}, ids: map[string][]string{}}
}

// Apply folds one event into the listing.
func (l *Listing) Apply(e domain.Event) error {
	defer l.mark(e.Seq)
	l.mu.Lock()
	defer l.mu.Unlock()
	_, isNew := e.Data.(domain.KeyCreated)
	k, err := applyKey(l.keys, e)
	if err != nil || k == nil || !isNew {
		return err
	}
	// Key ids are ULIDs: sorting them sorts by creation time.
	ids := l.ids[e.OrgID]
	i, _ := slices.BinarySearch(ids, e.KeyID)
	l.ids[e.OrgID] = slices.Insert(ids, i, e.KeyID)
	return nil
}

// Get returns a copy of one key.
func (l *Listing) Get(org, id string) (domain.Key, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	k, ok := l.keys[org+"/"+id]
	if !ok {
		return domain.Key{}, false
	}
	return *k, true
}

// ListQuery selects a page of an org's keys.
type ListQuery struct {
	Status string // "" (active and expired), "all", or one status
	Cursor string // the last id of the previous page
	Limit  int
	Now    time.Time
	// ExpiringBy, when set, keeps only active keys that expire by then.
	ExpiringBy time.Time
}

// List returns a page of keys, newest first, and the cursor of the next page
// ("" when there is none).
func (l *Listing) List(org string, q ListQuery) (page []domain.Key, next string) {
	if q.Limit <= 0 {
		return nil, ""
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	ids := l.ids[org]
	end := len(ids)
	if q.Cursor != "" {
		end, _ = slices.BinarySearch(ids, q.Cursor)
	}
	for i := end - 1; i >= 0; i-- {
		k := l.keys[org+"/"+ids[i]]
		if !matches(k.Status(q.Now), q.Status) || !expiringBy(k, q) {
			continue
		}
		if len(page) == q.Limit {
			return page, page[len(page)-1].ID
		}
		page = append(page, *k)
	}
	return page, ""
}

func expiringBy(k *domain.Key, q ListQuery) bool {
	if q.ExpiringBy.IsZero() {
		return true
	}
	return k.Status(q.Now) == domain.StatusActive && !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(q.ExpiringBy)
}

func matches(s domain.Status, want string) bool {
	switch want {
	case "":
		return s != domain.StatusRevoked
	case "all":
		return true
	}
	return strings.EqualFold(string(s), want)
}
