package projections

import (
	"slices"
	"strings"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// Listing is the masked listing of each org's keys, newest first. It is a
// view of a Table.
type Listing struct{ t *Table }

// NewListing returns an empty listing on a table of its own.
func NewListing() *Listing { return NewTable().Listing() }

// Apply folds one event into the listing's table.
func (l *Listing) Apply(e domain.Event) error { return l.t.Apply(e) }

// LastSeq returns the last sequence the table applied.
func (l *Listing) LastSeq() uint64 { return l.t.LastSeq() }

// Get returns one key, with its hashes. Its strings and scopes are shared
// with the listing: do not change them.
func (l *Listing) Get(org, id string) (domain.Key, bool) {
	t := l.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	slot, ok := t.find(org, id)
	if !ok {
		return domain.Key{}, false
	}
	return t.key(slot, true), true
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

// List returns a page of keys, newest first, without their hashes, and the
// cursor of the next page ("" when there is none).
func (l *Listing) List(org string, q ListQuery) (page []domain.Key, next string) {
	if q.Limit <= 0 {
		return nil, ""
	}
	t := l.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	o, ok := t.orgs.lookup(org)
	if !ok {
		return nil, ""
	}
	slots := t.byOrg[o]
	end := len(slots)
	if q.Cursor != "" {
		end, _ = slices.BinarySearchFunc(slots, q.Cursor, func(slot uint32, id string) int {
			return strings.Compare(t.text.get(t.rows.at(slot).keyID), id)
		})
	}
	for i := end - 1; i >= 0; i-- {
		slot := slots[i]
		status := t.status(slot, q.Now)
		if !matches(status, q.Status) || !t.expiringBy(slot, status, q) {
			continue
		}
		if len(page) == q.Limit {
			return page, page[len(page)-1].ID
		}
		page = append(page, t.key(slot, false))
	}
	return page, ""
}

// CountKeys returns how many keys org has not revoked (active), and how
// many in all, revoked ones included.
func (l *Listing) CountKeys(org string) (active, all int) {
	t := l.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	o, ok := t.orgs.lookup(org)
	if !ok {
		return 0, 0
	}
	all = len(t.byOrg[o])
	revoked := 0
	if int(o) < len(t.revokedByOrg) {
		revoked = t.revokedByOrg[o]
	}
	return all - revoked, all
}

var _ domain.KeyCounter = (*Listing)(nil)

// KeyIDs returns up to n ids of org's keys, revoked ones included, in
// ascending order (oldest first: ids are ULIDs) after the id after ("":
// from the first).
func (l *Listing) KeyIDs(org, after string, n int) []string {
	t := l.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	o, ok := t.orgs.lookup(org)
	if !ok || n <= 0 {
		return nil
	}
	slots := t.byOrg[o]
	i, found := slices.BinarySearchFunc(slots, after, func(slot uint32, id string) int {
		return strings.Compare(t.text.get(t.rows.at(slot).keyID), id)
	})
	if found {
		i++
	}
	out := make([]string, 0, min(n, len(slots)-i))
	for ; i < len(slots) && len(out) < n; i++ {
		out = append(out, t.text.get(t.rows.at(slots[i]).keyID))
	}
	return out
}

func (t *Table) expiringBy(slot uint32, status domain.Status, q ListQuery) bool {
	if q.ExpiringBy.IsZero() {
		return true
	}
	exp := t.rows.at(slot).expires
	return status == domain.StatusActive && exp != noTime && exp <= q.ExpiringBy.UnixMicro()
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
