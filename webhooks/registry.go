package webhooks

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/keyledger/keyledger/domain"
)

// Registry is the projection of every endpoint: it folds their events
// (and skips every other) in stream order. Load it with Prime before the
// projections' runner feeds it, since a snapshot of the key table does not
// hold endpoints.
type Registry struct {
	mu      sync.RWMutex
	byID    map[string]*domain.Webhook
	last    atomic.Uint64 // last sequence seen
	changed chan struct{}
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{byID: map[string]*domain.Webhook{}, changed: make(chan struct{})}
}

// Prime applies every endpoint event the stream holds.
func (r *Registry) Prime(ctx context.Context, each func(context.Context, func(domain.Event) error) error) error {
	return each(ctx, r.Apply)
}

// Apply folds e in when it is an endpoint's event, trusted, and after its
// endpoint's last one applied. The check is per endpoint: events of
// several endpoints may come in any order between them (a Create applies
// its own event before the feed brings earlier events of others).
func (r *Registry) Apply(e domain.Event) error {
	if e.Seq > r.last.Load() {
		r.last.Store(e.Seq)
	}
	if !e.Trusted || e.Data == nil || !domain.IsWebhookType(e.Type) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.byID[e.KeyID]
	if w != nil && e.Seq != 0 && e.Seq <= w.Version {
		return nil // applied already
	}
	if w == nil {
		if e.Type != domain.TypeWebhookCreated {
			return nil
		}
		w = &domain.Webhook{}
	}
	next := *w
	if err := next.Apply(e); err != nil {
		return nil // not in its history: a copy, or out of place
	}
	r.byID[e.KeyID] = &next
	close(r.changed)
	r.changed = make(chan struct{})
	return nil
}

// LastSeq is the last sequence the registry saw.
func (r *Registry) LastSeq() uint64 { return r.last.Load() }

// Get returns org's endpoint id (deleted ones included, marked so).
func (r *Registry) Get(org, id string) (domain.Webhook, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	w, ok := r.byID[id]
	if !ok || w.OrgID != org {
		return domain.Webhook{}, false
	}
	return *w, true
}

// List returns org's endpoints that are not deleted, oldest first.
func (r *Registry) List(org string) []domain.Webhook {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []domain.Webhook
	for _, w := range r.byID {
		if w.OrgID == org && !w.Deleted {
			out = append(out, *w)
		}
	}
	slices.SortFunc(out, func(a, b domain.Webhook) int { return cmp.Compare(a.CreatedSeq, b.CreatedSeq) })
	return out
}

// All returns every endpoint, deleted ones included, and a channel closed
// at the next change.
func (r *Registry) All() ([]domain.Webhook, <-chan struct{}) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]domain.Webhook, 0, len(r.byID))
	for _, w := range r.byID {
		out = append(out, *w)
	}
	return out, r.changed
}

func (r *Registry) byIDCopy(id string) (domain.Webhook, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	w, ok := r.byID[id]
	if !ok {
		return domain.Webhook{}, false
	}
	return *w, true
}
