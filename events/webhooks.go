package events

import (
	"context"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// CreateWebhook appends the first event of a new endpoint.
func (s *Store) CreateWebhook(ctx context.Context, e domain.Event) (domain.Event, error) {
	if domain.ValidateWebhookID(e.KeyID) != nil || e.Type != domain.TypeWebhookCreated {
		return e, domain.Errorf(domain.EINVALID, "not the creation of a webhook endpoint")
	}
	e.PrevHash = ""
	return s.append(ctx, e, 0)
}

// LoadWebhook rebuilds one endpoint from its events; ENOTFOUND when it has
// none (or was deleted).
func (s *Store) LoadWebhook(ctx context.Context, org, id string) (w domain.Webhook, last uint64, err error) {
	if err := domain.ValidateOrgID(org); err != nil {
		return w, 0, err
	}
	if err := domain.ValidateWebhookID(id); err != nil {
		return w, 0, err
	}
	err = s.Scan(ctx, KeySubjects(org, id), 1, func(m Msg) error {
		last = m.Seq
		e, ok, err := s.read(m)
		if err != nil || !ok || !domain.IsWebhookType(e.Type) || !w.Follows(e) {
			return err
		}
		return w.Apply(e)
	})
	if err == nil && (w.ID == "" || w.Deleted) {
		err = domain.Errorf(domain.ENOTFOUND, "no webhook endpoint %s in org %s", id, org)
	}
	return w, last, err
}

// UpdateWebhook loads an endpoint, lets decide choose its next event
// (none: no change), and appends it after the endpoint's last event.
func (s *Store) UpdateWebhook(ctx context.Context, org, id string, decide func(*domain.Webhook) (*domain.Event, error)) (domain.Webhook, error) {
	for attempt := 1; ; attempt++ {
		w, last, err := s.LoadWebhook(ctx, org, id)
		if err != nil {
			return w, err
		}
		e, err := decide(&w)
		if err != nil || e == nil {
			return w, err
		}
		e.OrgID, e.KeyID, e.PrevHash = org, id, w.LastHash
		stored, err := s.append(ctx, *e, last)
		if err == nil {
			return w, w.Apply(stored)
		}
		if domain.ErrorCode(err) != domain.ECONFLICT || attempt >= s.conflicts {
			return w, err
		}
	}
}

// EachWebhookEvent calls fn with every endpoint event keyledger wrote, of
// every org, in stream order: what a webhook projection starts from.
func (s *Store) EachWebhookEvent(ctx context.Context, fn func(domain.Event) error) error {
	_, err := s.EachTrusted(ctx, WebhookSubjects, 1, nil, func(e domain.Event) error {
		if !domain.IsWebhookType(e.Type) {
			return nil
		}
		return fn(e)
	})
	return err
}

// Judge reads one message of the history as the readers beside the
// projections do: ok is false for one keyledger did not write, which is
// not decoded. Where the projections' verdicts are in use (UseVerdicts),
// it first waits, until ctx ends, for them to judge seq.
func (s *Store) Judge(ctx context.Context, m Msg) (domain.Event, bool, error) {
	if wait := s.trust.waitVerdicts; wait != nil && s.trust.verdicts != nil {
		// Even when the table has reached seq: it marks an event judged as
		// it applies it, and the runner refuses one of no key the table
		// holds only after that. The runner's word is final.
		if err := wait(ctx, m.Seq); err != nil {
			return domain.Event{}, false, err
		}
	}
	// Until the table has judged seq: it may lag the runner when a change
	// of the trust set swapped tables meanwhile.
	for s.unjudged(m.Seq) {
		select {
		case <-ctx.Done():
			return domain.Event{}, false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return s.read(m)
}
