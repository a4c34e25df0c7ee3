package webhooks

import (
	"context"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// Create makes an endpoint of org for p and returns it with its signing
// secret, which is shown this once. The secret is sealed before the event
// that names it is appended.
func Create(ctx context.Context, store *events.Store, vault *Vault, reg *Registry, p domain.Principal, org, url, description string, types []domain.EventType) (domain.Webhook, string, error) {
	if err := p.MayManageWebhooks(org); err != nil {
		return domain.Webhook{}, "", err
	}
	if len(reg.List(org)) >= domain.MaxWebhooksPerOrg {
		return domain.Webhook{}, "", domain.Errorf(domain.EINVALID, "org %s has %d webhook endpoints, the most it may", org, domain.MaxWebhooksPerOrg)
	}
	id := domain.NewWebhookID()
	secret, raw := NewSecret()
	ref, err := vault.Put(ctx, id, raw)
	if err != nil {
		return domain.Webhook{}, "", domain.Wrap(domain.EUNAVAILABLE, err, "the signing secret cannot be kept")
	}
	e := domain.Event{
		ID: ulid.Make().String(), Type: domain.TypeWebhookCreated, SchemaVersion: domain.SchemaVersion,
		OrgID: org, KeyID: id, OccurredAt: time.Now().UTC(), Actor: p.Actor,
		Data: domain.WebhookCreated{URL: url, Description: description, EventTypes: types, SecretRef: ref, SecretMasked: MaskSecret(secret)},
	}
	stored, err := store.CreateWebhook(ctx, e)
	if err != nil {
		vault.Forget(ctx, id, ref)
		return domain.Webhook{}, "", err
	}
	var w domain.Webhook
	if err := w.Apply(stored); err != nil {
		return w, "", domain.Wrap(domain.EINTERNAL, err, "cannot apply the new event")
	}
	_ = reg.Apply(stored)
	return w, secret, nil
}

func change(ctx context.Context, store *events.Store, org, id string, a domain.Actor, decide func(*domain.Webhook) (any, domain.EventType, bool)) (domain.Webhook, error) {
	w, err := store.UpdateWebhook(ctx, org, id, func(w *domain.Webhook) (*domain.Event, error) {
		data, t, ok := decide(w)
		if !ok {
			return nil, nil
		}
		return &domain.Event{ID: ulid.Make().String(), Type: t, SchemaVersion: domain.SchemaVersion, OccurredAt: time.Now().UTC(), Actor: a, Data: data}, nil
	})
	return w, err // the registries learn of the change from the feed
}

// Disable stops deliveries to an endpoint; undelivered events wait in its
// consumer until it is enabled again.
func Disable(ctx context.Context, store *events.Store, org, id string, a domain.Actor, reason string) error {
	_, err := change(ctx, store, org, id, a, func(w *domain.Webhook) (any, domain.EventType, bool) {
		return domain.WebhookDisabled{Reason: reason}, domain.TypeWebhookDisabled, !w.Disabled
	})
	return err
}

// Enable resumes deliveries to an endpoint where they stopped.
func Enable(ctx context.Context, store *events.Store, org, id string, a domain.Actor) error {
	_, err := change(ctx, store, org, id, a, func(w *domain.Webhook) (any, domain.EventType, bool) {
		return domain.WebhookEnabled{}, domain.TypeWebhookEnabled, w.Disabled
	})
	return err
}

// Delete removes an endpoint; its consumer and sealed secret go with it.
func Delete(ctx context.Context, store *events.Store, vault *Vault, org, id string, a domain.Actor) error {
	w, err := change(ctx, store, org, id, a, func(*domain.Webhook) (any, domain.EventType, bool) {
		return domain.WebhookDeleted{}, domain.TypeWebhookDeleted, true
	})
	if err == nil {
		vault.Forget(ctx, id, w.SecretRef)
	}
	return err
}
