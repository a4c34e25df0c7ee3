package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// Spec is an endpoint as a manager asks for it; a nil field of an update
// leaves it as it is.
type Spec struct {
	URL         *string
	Description *string
	EventTypes  *[]string
	// IfVersion, when not zero, must be the endpoint's version for an
	// update to be made (If-Match): EPRECONDITION otherwise.
	IfVersion uint64
}

// DefaultSecretGrace is how long a replaced signing secret signs beside
// the new one when the rotation does not say.
const DefaultSecretGrace = 24 * time.Hour

// Create makes an endpoint of org for p and returns it with its signing
// secret, which is shown this once. The URL and the secret are sealed
// before the event that names them is appended.
func (d *Deliverer) Create(ctx context.Context, p domain.Principal, org string, spec Spec) (domain.Webhook, string, error) {
	if err := p.MayManageWebhooks(org); err != nil {
		return domain.Webhook{}, "", err
	}
	if spec.URL == nil {
		return domain.Webhook{}, "", domain.Errorf(domain.EINVALID, "url is required")
	}
	data, err := d.settle(ctx, "", domain.WebhookUpdated{}, spec)
	if err != nil {
		return domain.Webhook{}, "", err
	}
	id := domain.NewWebhookID()
	slot, err := d.claimSlot(ctx, org, id)
	if err != nil {
		return domain.Webhook{}, "", err
	}
	urlRef, err := d.o.Vault.Put(ctx, id, []byte(*spec.URL))
	if err != nil {
		d.releaseSlot(ctx, slot)
		return domain.Webhook{}, "", domain.Wrap(domain.EUNAVAILABLE, err, "the endpoint cannot be kept")
	}
	secret, raw := NewSecret()
	ref, err := d.o.Vault.Put(ctx, id, raw)
	if err != nil {
		d.releaseSlot(ctx, slot)
		d.o.Vault.Forget(ctx, id, urlRef)
		return domain.Webhook{}, "", domain.Wrap(domain.EUNAVAILABLE, err, "the signing secret cannot be kept")
	}
	e := domain.Event{
		ID: ulid.Make().String(), Type: domain.TypeWebhookCreated, SchemaVersion: domain.SchemaVersion,
		OrgID: org, KeyID: id, OccurredAt: time.Now().UTC(), Actor: p.Actor,
		Data: domain.WebhookCreated{URLRef: urlRef, URLMasked: data.URLMasked, Description: data.Description,
			EventTypes: data.EventTypes, SecretRef: ref, SecretMasked: MaskSecret(secret)},
	}
	stored, err := d.o.Store.CreateWebhook(ctx, e)
	if err != nil {
		d.releaseSlot(ctx, slot)
		d.o.Vault.Forget(ctx, id, urlRef, ref)
		return domain.Webhook{}, "", err
	}
	var w domain.Webhook
	if err := w.Apply(stored); err != nil {
		return w, "", domain.Wrap(domain.EINTERNAL, err, "cannot apply the new event")
	}
	_ = d.o.Registry.Apply(stored)
	return w, secret, nil
}

// settle validates spec over the endpoint's current settings (cur) and
// returns them as they would stand, with a new URL sealed for id (when id
// is "", only validated: Create seals it once it has an id).
func (d *Deliverer) settle(ctx context.Context, id string, cur domain.WebhookUpdated, spec Spec) (domain.WebhookUpdated, error) {
	next := cur
	if spec.URL != nil {
		u, err := domain.ValidateWebhookURL(*spec.URL, d.o.AllowHTTP, d.o.AllowPrivate)
		if err != nil {
			return next, err
		}
		*spec.URL = u
		next.URLMasked = domain.MaskWebhookURL(u)
		if id != "" {
			if next.URLRef, err = d.o.Vault.Put(ctx, id, []byte(u)); err != nil {
				return next, domain.Wrap(domain.EUNAVAILABLE, err, "the endpoint cannot be kept")
			}
		}
	}
	if spec.Description != nil {
		desc, err := domain.ValidateDescription(*spec.Description)
		if err != nil {
			return next, err
		}
		next.Description = desc
	}
	if spec.EventTypes != nil {
		types, err := domain.ValidateWebhookEventTypes(*spec.EventTypes)
		if err != nil {
			return next, err
		}
		next.EventTypes = types
	}
	return next, nil
}

// Update changes an endpoint's URL, description or subscription. A URL
// replaced is forgotten, and so is every URL sealed by a try that lost
// to a concurrent change: only the endpoint's URL stays sealed.
func (d *Deliverer) Update(ctx context.Context, p domain.Principal, org, id string, spec Spec) (domain.Webhook, error) {
	var sealed []string // by each try of decide, the last one's last
	var replaced string
	w, err := d.change(ctx, p, org, id, func(w *domain.Webhook) (any, domain.EventType, bool, error) {
		if spec.IfVersion != 0 && spec.IfVersion != w.Version {
			return nil, "", false, domain.Errorf(domain.EPRECONDITION, "webhook endpoint has changed since version %d (now %d)", spec.IfVersion, w.Version)
		}
		cur := domain.WebhookUpdated{URLRef: w.URLRef, URLMasked: w.URLMasked, Description: w.Description, EventTypes: w.EventTypes}
		next, err := d.settle(ctx, id, cur, spec)
		if err != nil {
			return nil, "", false, err
		}
		replaced = ""
		if next.URLRef != cur.URLRef {
			sealed, replaced = append(sealed, next.URLRef), cur.URLRef
		}
		return next, domain.TypeWebhookUpdated, true, nil
	})
	switch {
	case err != nil:
		d.o.Vault.Forget(ctx, id, sealed...)
	case replaced != "":
		d.o.Vault.Forget(ctx, id, append(sealed[:len(sealed)-1], replaced)...)
	}
	return w, err
}

// RotateSecret gives an endpoint a new signing secret, shown this once;
// the replaced one signs beside it for grace (at most
// domain.MaxWebhookSecretGrace), so that a receiver can switch to the new
// one without refusing a delivery.
func (d *Deliverer) RotateSecret(ctx context.Context, p domain.Principal, org, id string, grace time.Duration) (domain.Webhook, string, error) {
	if grace < 0 || grace > domain.MaxWebhookSecretGrace {
		return domain.Webhook{}, "", domain.Errorf(domain.EINVALID, "grace_period_seconds must be from 0 to %d", int(domain.MaxWebhookSecretGrace.Seconds()))
	}
	secret, raw := NewSecret()
	var ref, dropped string
	w, err := d.change(ctx, p, org, id, func(w *domain.Webhook) (any, domain.EventType, bool, error) {
		dropped = w.PreviousRef // signs no more: the current secret becomes the previous one
		if ref == "" {
			var err error
			if ref, err = d.o.Vault.Put(ctx, id, raw); err != nil {
				return nil, "", false, domain.Wrap(domain.EUNAVAILABLE, err, "the signing secret cannot be kept")
			}
		}
		var until time.Time
		if grace > 0 {
			until = time.Now().Add(grace).UTC()
		}
		return domain.WebhookSecretRotated{SecretRef: ref, SecretMasked: MaskSecret(secret), PreviousExpiresAt: until}, domain.TypeWebhookSecretRotated, true, nil
	})
	if err != nil {
		if ref != "" {
			d.o.Vault.Forget(ctx, id, ref)
		}
		return w, "", err
	}
	d.o.Vault.Forget(ctx, id, dropped)
	return w, secret, nil
}

// Disable stops deliveries to an endpoint; undelivered events wait in its
// consumer until it is enabled again.
func (d *Deliverer) Disable(ctx context.Context, p domain.Principal, org, id, reason string) (domain.Webhook, error) {
	if reason != "" {
		var err error
		if reason, err = domain.ValidateDescription(reason); err != nil {
			return domain.Webhook{}, domain.Errorf(domain.EINVALID, "reason: %s", domain.ErrorMessage(err))
		}
	}
	return d.change(ctx, p, org, id, func(w *domain.Webhook) (any, domain.EventType, bool, error) {
		return domain.WebhookDisabled{Reason: reason}, domain.TypeWebhookDisabled, !w.Disabled, nil
	})
}

// Enable resumes deliveries to an endpoint where they stopped; the days
// it failed before do not count against it.
func (d *Deliverer) Enable(ctx context.Context, p domain.Principal, org, id string) (domain.Webhook, error) {
	return d.change(ctx, p, org, id, func(w *domain.Webhook) (any, domain.EventType, bool, error) {
		return domain.WebhookEnabled{}, domain.TypeWebhookEnabled, w.Disabled, nil
	})
}

// Replay sends the endpoint again, in order, every event it wants from
// the instant from on (those before its creation excepted).
func (d *Deliverer) Replay(ctx context.Context, p domain.Principal, org, id string, from time.Time) (domain.Webhook, error) {
	if from.IsZero() || from.After(time.Now()) {
		return domain.Webhook{}, domain.Errorf(domain.EINVALID, "from must be an instant in the past (RFC 3339)")
	}
	return d.change(ctx, p, org, id, func(*domain.Webhook) (any, domain.EventType, bool, error) {
		return domain.WebhookReplayed{From: from.UTC()}, domain.TypeWebhookReplayed, true, nil
	})
}

// Delete removes an endpoint; its consumer, its slot and its sealed
// secrets go with it.
func (d *Deliverer) Delete(ctx context.Context, p domain.Principal, org, id string) error {
	var refs []string
	_, err := d.change(ctx, p, org, id, func(w *domain.Webhook) (any, domain.EventType, bool, error) {
		refs = []string{w.URLRef, w.SecretRef, w.PreviousRef}
		return domain.WebhookDeleted{}, domain.TypeWebhookDeleted, true, nil
	})
	if err == nil {
		d.o.Vault.Forget(ctx, id, refs...)
		d.forgetState(ctx, id)
		d.releaseSlotOf(ctx, org, id)
	}
	return err
}

// change appends the event decide chooses (none when !ok) after the
// endpoint's last, and returns the endpoint as it then stands.
func (d *Deliverer) change(ctx context.Context, p domain.Principal, org, id string, decide func(*domain.Webhook) (any, domain.EventType, bool, error)) (domain.Webhook, error) {
	if err := p.MayManageWebhooks(org); err != nil {
		return domain.Webhook{}, err
	}
	w, err := d.o.Store.UpdateWebhook(ctx, org, id, func(w *domain.Webhook) (*domain.Event, error) {
		data, t, ok, err := decide(w)
		if err != nil || !ok {
			return nil, err
		}
		return &domain.Event{ID: ulid.Make().String(), Type: t, SchemaVersion: domain.SchemaVersion, OccurredAt: time.Now().UTC(), Actor: p.Actor, Data: data}, nil
	})
	return w, err // the registries learn of the change from the feed
}

// An org's endpoints are bounded by slots in the state bucket: a create
// claims a free one atomically (a key created only if absent), so that
// creates at once on several instances cannot pass the bound. A slot
// whose endpoint was deleted, or never appended (an instance that died
// between the claim and the append), is claimed again.
func slotKey(org string, n int) string { return "slot." + org + "." + strconv.Itoa(n) }

type slotClaim struct {
	key string
}

func (d *Deliverer) claimSlot(ctx context.Context, org, id string) (slotClaim, error) {
	for n := range domain.MaxWebhooksPerOrg {
		k := slotKey(org, n)
		if _, err := d.state.Create(ctx, k, []byte(id)); err == nil {
			return slotClaim{k}, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return slotClaim{}, domain.Wrap(domain.EUNAVAILABLE, err, "the endpoint cannot be kept")
		}
	}
	for n := range domain.MaxWebhooksPerOrg {
		k := slotKey(org, n)
		ent, err := d.state.Get(ctx, k)
		if err != nil {
			continue
		}
		holder, ok := d.o.Registry.Get(org, string(ent.Value()))
		stale := ok && holder.Deleted || !ok && time.Since(ent.Created()) > 2*time.Minute
		if !stale {
			continue
		}
		if _, err := d.state.Update(ctx, k, []byte(id), ent.Revision()); err == nil {
			return slotClaim{k}, nil
		}
	}
	return slotClaim{}, domain.Errorf(domain.ECONFLICT, "org %s has %d webhook endpoints, the most it may", org, domain.MaxWebhooksPerOrg)
}

func (d *Deliverer) releaseSlot(ctx context.Context, c slotClaim) { _ = d.state.Delete(ctx, c.key) }

func (d *Deliverer) releaseSlotOf(ctx context.Context, org, id string) {
	for n := range domain.MaxWebhooksPerOrg {
		k := slotKey(org, n)
		if ent, err := d.state.Get(ctx, k); err == nil && string(ent.Value()) == id {
			_ = d.state.Delete(ctx, k, jetstream.LastRevision(ent.Revision()))
			return
		}
	}
}

// Get returns org's endpoint id as this instance's registry holds it.
func (d *Deliverer) Get(org, id string) (domain.Webhook, error) {
	if err := domain.ValidateWebhookID(id); err != nil {
		return domain.Webhook{}, err
	}
	w, ok := d.o.Registry.Get(org, id)
	if !ok || w.Deleted {
		return domain.Webhook{}, domain.Errorf(domain.ENOTFOUND, "no webhook endpoint %s in org %s", id, org)
	}
	return w, nil
}

// List returns org's endpoints, oldest first.
func (d *Deliverer) List(org string) []domain.Webhook { return d.o.Registry.List(org) }

// TypeWebhookTest is the type of the event a test delivery sends. It is
// not appended to the history: it exists only in that one delivery.
const TypeWebhookTest = "WebhookTest"

// Test sends endpoint id, at once and once, a signed WebhookTest event in
// the envelope every event has, and keeps the attempt.
func (d *Deliverer) Test(ctx context.Context, p domain.Principal, org, id string) (Attempt, error) {
	w, err := d.managed(p, org, id)
	if err != nil {
		return Attempt{}, err
	}
	e := domain.Event{ID: ulid.Make().String(), Type: TypeWebhookTest, SchemaVersion: domain.SchemaVersion,
		OrgID: org, KeyID: id, OccurredAt: time.Now().UTC(), Actor: p.Actor}
	body, err := json.Marshal(events.Envelope{EventID: e.ID, Type: TypeWebhookTest, SchemaVersion: e.SchemaVersion,
		OrgID: org, KeyID: id, OccurredAt: events.FormatTime(e.OccurredAt), Actor: events.Actor(p.Actor),
		Data: json.RawMessage(`{"message":"a test event from keyledger: this endpoint receives its org's key events"}`)})
	if err != nil {
		return Attempt{}, domain.Wrap(domain.EINTERNAL, err, "cannot write the test event")
	}
	return d.manual(ctx, w, e, body), nil
}

// Redeliver sends endpoint id, at once and once, the event of one of its
// kept attempts again (as it is in the history, judged again), and keeps
// the attempt. It does not change where the endpoint's deliveries stand.
func (d *Deliverer) Redeliver(ctx context.Context, p domain.Principal, org, id, attemptID string) (Attempt, error) {
	w, err := d.managed(p, org, id)
	if err != nil {
		return Attempt{}, err
	}
	if _, err := ulid.ParseStrict(attemptID); err != nil {
		return Attempt{}, domain.Errorf(domain.EINVALID, "attempt id must be a ULID")
	}
	atts, err := d.Attempts(ctx, org, id, AttemptsKept)
	if err != nil {
		return Attempt{}, domain.Wrap(domain.EUNAVAILABLE, err, "the attempts cannot be read")
	}
	var seq uint64
	for _, a := range atts {
		if a.ID == attemptID && a.Seq != 0 {
			seq = a.Seq
		}
	}
	if seq == 0 {
		return Attempt{}, domain.Errorf(domain.ENOTFOUND, "endpoint %s kept no attempt %s of an event of the history", id, attemptID)
	}
	// Read with the server's sequence and subject (Store.Msg): nats.go's
	// GetMsg takes them from headers the message's publisher may write.
	raw, found, err := d.o.Store.Msg(ctx, seq)
	if err != nil {
		return Attempt{}, domain.Wrap(domain.EUNAVAILABLE, err, "the event cannot be read")
	}
	if !found {
		return Attempt{}, domain.Errorf(domain.ENOTFOUND, "the event of attempt %s is no longer in the history", attemptID)
	}
	if !strings.HasPrefix(raw.Subject, events.SubjectRoot+"."+org+".") {
		return Attempt{}, domain.Errorf(domain.ENOTFOUND, "endpoint %s kept no attempt %s of an event of its org", id, attemptID)
	}
	e, body, err := d.judge(ctx, raw)
	if err != nil || e.OrgID != org {
		return Attempt{}, domain.Errorf(domain.ENOTFOUND, "the event of attempt %s is not one keyledger delivers", attemptID)
	}
	return d.manual(ctx, w, e, body), nil
}

// managed returns the endpoint p may act on.
func (d *Deliverer) managed(p domain.Principal, org, id string) (domain.Webhook, error) {
	if err := p.MayManageWebhooks(org); err != nil {
		return domain.Webhook{}, err
	}
	return d.Get(org, id)
}

// manual makes one attempt a manager asked for, counts and keeps it.
func (d *Deliverer) manual(ctx context.Context, w domain.Webhook, e domain.Event, body []byte) Attempt {
	a := d.attempt(ctx, w, e, body)
	a.Manual = true
	switch {
	case a.err == nil && a.ResponseCode >= 200 && a.ResponseCode < 300:
		a.Result = "succeeded"
	case refused(a.err):
		a.Result = "refused"
	default:
		a.Result = "failed"
	}
	d.count(a.Result)
	d.record(ctx, w.OrgID, a.Attempt)
	return a.Attempt
}
