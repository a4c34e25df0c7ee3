package http

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/webhooks"
)

// WebhookView is an endpoint as the API shows it: its URL masked (its path
// may be a token), never its signing secret.
type WebhookView struct {
	ID                      string       `json:"id"`
	OrgID                   string       `json:"org_id"`
	URL                     string       `json:"url"`
	Description             string       `json:"description"`
	EventTypes              []string     `json:"event_types"`
	Status                  string       `json:"status"`
	DisabledReason          string       `json:"disabled_reason,omitempty"`
	SecretMasked            string       `json:"secret_masked"`
	PreviousSecretExpiresAt *string      `json:"previous_secret_expires_at,omitempty"`
	CreatedAt               string       `json:"created_at"`
	CreatedBy               events.Actor `json:"created_by"`
	Version                 uint64       `json:"version"`
}

func viewWebhook(w domain.Webhook, now time.Time) WebhookView {
	v := WebhookView{
		ID: w.ID, OrgID: w.OrgID, URL: w.URLMasked, Description: w.Description, EventTypes: []string{},
		Status: "enabled", SecretMasked: w.SecretMasked, CreatedAt: events.FormatTime(w.CreatedAt),
		CreatedBy: events.Actor(w.CreatedBy), Version: w.Version,
	}
	for _, t := range domain.WebhookEventTypes {
		if w.Wants(t) {
			v.EventTypes = append(v.EventTypes, string(t))
		}
	}
	if w.Disabled {
		v.Status, v.DisabledReason = "disabled", w.DisabledWhy
	}
	if len(w.Signing(now)) > 1 {
		v.PreviousSecretExpiresAt = events.OptionalTime(w.PreviousUntil)
	}
	return v
}

// webhookIssued answers a create and a secret rotation: the only answers
// with the signing secret.
type webhookIssued struct {
	Webhook WebhookView `json:"webhook"`
	Secret  string      `json:"secret"`
}

type webhookRequest struct {
	URL         *string   `json:"url"`
	Description *string   `json:"description"`
	EventTypes  *[]string `json:"event_types"`
}

func (q webhookRequest) spec() webhooks.Spec {
	return webhooks.Spec{URL: q.URL, Description: q.Description, EventTypes: q.EventTypes}
}

// manualTimeout bounds a test event or a redelivery, which wait for the
// endpoint's answer: its 15 s, and a little to keep the attempt.
const manualTimeout = 20 * time.Second

func (s *Server) webhookRoutes(r chi.Router) {
	r.Use(s.webhookManager)
	r.With(s.idempotent, s.writeLimited, s.bounded).Post("/", s.createWebhook)
	r.Get("/", s.listWebhooks)
	r.Route("/{id}", func(r chi.Router) {
		r.Use(s.webhookID)
		r.Get("/", s.getWebhook)
		r.With(s.idempotent, s.writeLimited, s.bounded).Patch("/", s.updateWebhook)
		r.With(s.idempotent, s.bounded).Delete("/", s.deleteWebhook)
		r.With(s.idempotent, s.writeLimited, s.bounded).Post("/rotate-secret", s.rotateWebhookSecret)
		r.With(s.idempotent, s.bounded).Post("/disable", s.disableWebhook)
		r.With(s.idempotent, s.writeLimited, s.bounded).Post("/enable", s.enableWebhook)
		r.With(s.idempotent, s.writeLimited, s.bounded).Post("/replay", s.replayWebhook)
		r.Get("/deliveries", s.webhookDeliveries)
		r.With(s.writeLimited).Post("/deliveries/{attempt}/redeliver", s.redeliverWebhook)
		r.With(s.writeLimited).Post("/test", s.testWebhook)
	})
}

// webhookManager lets through only who may manage the org's endpoints:
// a management key needs webhooks:manage beside keys:manage, even to read
// them (an attempt keeps the start of the endpoint's answers).
func (s *Server) webhookManager(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := caller(r.Context()).MayManageWebhooks(chi.URLParam(r, "org")); err != nil {
			s.fail(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// webhookID validates {id} before any handler sees it.
func (s *Server) webhookID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := domain.ValidateWebhookID(chi.URLParam(r, "id")); err != nil {
			s.fail(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func orgAndWebhook(r *http.Request) (org, id string) {
	return chi.URLParam(r, "org"), chi.URLParam(r, "id")
}

// webhookWritten waits, as a key's write does, until this instance has
// applied the endpoint's event, so that a read after it sees it.
func (s *Server) webhookWritten(w http.ResponseWriter, r *http.Request, wh domain.Webhook) {
	s.writtenAt(w, r, wh.Version)
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) {
	var req webhookRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	org := chi.URLParam(r, "org")
	wh, secret, err := s.Webhooks.Create(r.Context(), caller(r.Context()), org, req.spec())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/orgs/%s/webhooks/%s", org, wh.ID))
	s.webhookWritten(w, r, wh)
	writeJSON(w, http.StatusCreated, webhookIssued{Webhook: viewWebhook(wh, s.Now()), Secret: secret})
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) {
	all := s.Webhooks.List(chi.URLParam(r, "org"))
	views := make([]WebhookView, 0, len(all))
	for _, wh := range all {
		views = append(views, viewWebhook(wh, s.Now()))
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, map[string]any{"webhooks": views})
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) {
	wh, err := s.Webhooks.Get(orgAndWebhook(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("ETag", etag(wh.Version))
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, viewWebhook(wh, s.Now()))
}

// changed answers a change to an endpoint with the endpoint as it stands.
func (s *Server) changed(w http.ResponseWriter, r *http.Request, status int, wh domain.Webhook, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.webhookWritten(w, r, wh)
	writeJSON(w, status, viewWebhook(wh, s.Now()))
}

func (s *Server) updateWebhook(w http.ResponseWriter, r *http.Request) {
	var req webhookRequest
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.URL == nil && req.Description == nil && req.EventTypes == nil {
		s.fail(w, r, domain.Errorf(domain.EINVALID, "nothing to change: give url, description or event_types"))
		return
	}
	spec := req.spec()
	var err error
	if spec.IfVersion, err = ifMatch(r); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndWebhook(r)
	wh, err := s.Webhooks.Update(r.Context(), caller(r.Context()), org, id, spec)
	s.changed(w, r, http.StatusOK, wh, err)
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) {
	org, id := orgAndWebhook(r)
	if err := s.Webhooks.Delete(r.Context(), caller(r.Context()), org, id); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) rotateWebhookSecret(w http.ResponseWriter, r *http.Request) {
	req := struct {
		GracePeriodSeconds *int64 `json:"grace_period_seconds"`
	}{}
	if err := decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	grace := webhooks.DefaultSecretGrace
	if req.GracePeriodSeconds != nil {
		most := int64(domain.MaxWebhookSecretGrace / time.Second)
		if *req.GracePeriodSeconds < 0 || *req.GracePeriodSeconds > most {
			s.fail(w, r, domain.Errorf(domain.EINVALID, "grace_period_seconds must be from 0 to %d", most))
			return
		}
		grace = time.Duration(*req.GracePeriodSeconds) * time.Second
	}
	org, id := orgAndWebhook(r)
	wh, secret, err := s.Webhooks.RotateSecret(r.Context(), caller(r.Context()), org, id, grace)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.webhookWritten(w, r, wh)
	writeJSON(w, http.StatusOK, webhookIssued{Webhook: viewWebhook(wh, s.Now()), Secret: secret})
}

func (s *Server) disableWebhook(w http.ResponseWriter, r *http.Request) {
	req := struct {
		Reason string `json:"reason"`
	}{}
	if err := decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndWebhook(r)
	wh, err := s.Webhooks.Disable(r.Context(), caller(r.Context()), org, id, req.Reason)
	s.changed(w, r, http.StatusOK, wh, err)
}

func (s *Server) enableWebhook(w http.ResponseWriter, r *http.Request) {
	if err := decode(w, r, &struct{}{}, true); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndWebhook(r)
	wh, err := s.Webhooks.Enable(r.Context(), caller(r.Context()), org, id)
	s.changed(w, r, http.StatusOK, wh, err)
}

func (s *Server) replayWebhook(w http.ResponseWriter, r *http.Request) {
	req := struct {
		From time.Time `json:"from"`
	}{}
	if err := decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndWebhook(r)
	wh, err := s.Webhooks.Replay(r.Context(), caller(r.Context()), org, id, req.From)
	s.changed(w, r, http.StatusAccepted, wh, err)
}

func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request) {
	limit, err := queryUint(r, "limit", 50, 1, webhooks.AttemptsKept)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	org, id := orgAndWebhook(r)
	if _, err := s.Webhooks.Get(org, id); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.CommandTimeout)
	defer cancel()
	atts, err := s.Webhooks.Attempts(ctx, org, id, int(limit))
	if err != nil {
		s.fail(w, r, domain.Wrap(domain.EUNAVAILABLE, err, "the attempts cannot be read"))
		return
	}
	if atts == nil {
		atts = []webhooks.Attempt{}
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": atts})
}

func (s *Server) redeliverWebhook(w http.ResponseWriter, r *http.Request) {
	org, id := orgAndWebhook(r)
	ctx, cancel := context.WithTimeout(r.Context(), manualTimeout)
	defer cancel()
	a, err := s.Webhooks.Redeliver(ctx, caller(r.Context()), org, id, chi.URLParam(r, "attempt"))
	s.manualAnswer(w, r, a, err)
}

func (s *Server) testWebhook(w http.ResponseWriter, r *http.Request) {
	org, id := orgAndWebhook(r)
	ctx, cancel := context.WithTimeout(r.Context(), manualTimeout)
	defer cancel()
	a, err := s.Webhooks.Test(ctx, caller(r.Context()), org, id)
	s.manualAnswer(w, r, a, err)
}

// manualAnswer answers a manual attempt with the attempt: 200 whatever
// the endpoint answered, since the request itself was carried out.
func (s *Server) manualAnswer(w http.ResponseWriter, r *http.Request, a webhooks.Attempt, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header()["Cache-Control"] = noStore
	writeJSON(w, http.StatusOK, a)
}
