package http

import (
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// KeyView is a key as the API shows it: masked, never its secret.
type KeyView struct {
	ID         string       `json:"id"`
	OrgID      string       `json:"org_id"`
	Name       string       `json:"name"`
	Masked     string       `json:"masked"`
	Scopes     []string     `json:"scopes"`
	Status     string       `json:"status"`
	CreatedAt  string       `json:"created_at"`
	CreatedBy  events.Actor `json:"created_by"`
	RotatedAt  *string      `json:"rotated_at"`
	RevokedAt  *string      `json:"revoked_at"`
	ExpiresAt  *string      `json:"expires_at"`
	LastUsedAt *string      `json:"last_used_at"`
	Version    uint64       `json:"version"`
	// Leak is the key's latest leak report; absent when it has none.
	Leak *LeakView `json:"leak,omitempty"`
}

// LeakView is where a key's secret was found, and when it was reported.
type LeakView struct {
	URL        string `json:"url"`
	ReportedAt string `json:"reported_at"`
}

// view shows k as it stands at now, with its last use seen anywhere.
func (s *Server) view(k domain.Key, now time.Time) KeyView {
	v := viewKey(k, now)
	v.LastUsedAt = events.OptionalTime(s.Usage.LastUsed(k.OrgID, k.ID))
	return v
}

func viewKey(k domain.Key, now time.Time) KeyView {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	v := KeyView{
		ID: k.ID, OrgID: k.OrgID, Name: k.Name, Masked: k.Masked, Scopes: scopes,
		Status: string(k.Status(now)), CreatedAt: events.FormatTime(k.CreatedAt),
		CreatedBy: events.Actor(k.CreatedBy), RotatedAt: events.OptionalTime(k.RotatedAt),
		RevokedAt: events.OptionalTime(k.RevokedAt), ExpiresAt: events.OptionalTime(k.ExpiresAt),
		Version: k.Version,
	}
	if k.LastLeak != nil {
		v.Leak = &LeakView{URL: k.LastLeak.URL, ReportedAt: events.FormatTime(k.LastLeak.At)}
	}
	return v
}

func viewEvents(evs []domain.Event) ([]events.Envelope, error) {
	out := make([]events.Envelope, 0, len(evs))
	for _, e := range evs {
		env, err := events.ToEnvelope(e)
		if err != nil {
			return nil, domain.Wrap(domain.EINTERNAL, err, "cannot show an event")
		}
		out = append(out, env)
	}
	return out, nil
}

// issuedView answers create and rotate: the only answers with a full key.
type issuedView struct {
	Key    KeyView `json:"key"`
	Secret string  `json:"secret"`
}

// VerifyView answers POST /v1/verify.
type VerifyView struct {
	Valid      bool     `json:"valid"`
	Code       string   `json:"code"`
	OrgID      *string  `json:"org_id"`
	KeyID      *string  `json:"key_id"`
	Name       *string  `json:"name"`
	Scopes     []string `json:"scopes"`
	ExpiresAt  *string  `json:"expires_at"`
	Deprecated bool     `json:"deprecated"`
}
