package domain

import (
	"strings"
	"time"
	"unicode/utf8"
)

// ScopeLeaksReport lets a key report leaked keys (POST /v1/leaks): a
// secret scanner's credential.
const ScopeLeaksReport = "leaks:report"

// Bounds of a leak report's fields.
const (
	MaxLeakURLLen      = 2048
	MaxLeakSourceLen   = 100
	MaxLeakReporterLen = 200
)

// ReportLeak says that a secret of a key was found where it should not be.
type ReportLeak struct {
	SecretHash string // of the secret found: HashSecret
	Masked     string
	Source     string
	URL        string
	Reporter   string
	// Revoke ends the key at once (the default); false records the leak
	// and leaves the decision to the key's managers.
	Revoke bool
	By     Principal
}

// MayReportLeaks returns nil when p may report leaked keys: keyledger
// itself (a secret scanning partner, authenticated by its signature), a
// key holding leaks:report, a management key, or a person who manages an
// org. The secret
// reported is proof enough of which key leaked: a scanner of one org finds
// the keys of others. Returns EFORBIDDEN.
func (p Principal) MayReportLeaks() error {
	switch {
	case p.Actor.Kind == ActorSystem:
		return nil
	case p.key != nil && (p.key.HasScope(ScopeLeaksReport) || p.key.HasScope(ScopeManage)):
		return nil
	case p.key == nil && p.Actor.Kind == ActorUser:
		for _, role := range p.roles {
			if role == RoleManager {
				return nil
			}
		}
	}
	return Errorf(EFORBIDDEN, "reporting leaks needs a key holding %s or %s, or a manager", ScopeLeaksReport, ScopeManage)
}

// ValidateLeak checks a report's fields. Returns EINVALID.
func (cmd ReportLeak) ValidateLeak() error {
	for _, f := range []struct {
		name, value string
		max         int
	}{{"url", cmd.URL, MaxLeakURLLen}, {"source", cmd.Source, MaxLeakSourceLen}, {"reporter", cmd.Reporter, MaxLeakReporterLen}} {
		if utf8.RuneCountInString(f.value) > f.max {
			return Errorf(EINVALID, "%s must be at most %d characters", f.name, f.max)
		}
		if err := printable(f.name, f.value); err != nil {
			return err
		}
	}
	return nil
}

// Live reports whether the secret with this hash still opens k at now:
// its current secret, or the one a rotation replaced, during its grace
// period.
func (k *Key) Live(hash string, now time.Time) bool {
	if k.Revoked || (!k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt)) {
		return false
	}
	return hash == k.SecretHash || (hash == k.PreviousSecretHash && now.Before(k.PreviousExpiresAt))
}

// DecideLeak returns the events a leak report calls for, in order: a
// KeyLeakReported, unless this secret's leak at this URL is on record
// already; then a KeyRevoked, when the report asks for it and the secret
// still opens the key. A repeated report calls for nothing; one whose
// revocation did not land (the first event did) calls for the revocation
// alone. Only a key rebuilt from its history knows its reports: decide
// on one (HistoryUpdater).
func (k *Key) DecideLeak(cmd ReportLeak, now time.Time) ([]Event, error) {
	if err := cmd.By.MayReportLeaks(); err != nil {
		return nil, err
	}
	if err := cmd.ValidateLeak(); err != nil {
		return nil, err
	}
	var out []Event
	known := false
	for _, l := range k.Leaks {
		known = known || (l.SecretHash == cmd.SecretHash && l.URL == cmd.URL)
	}
	if !known {
		out = append(out, k.event(TypeKeyLeakReported, now, cmd.By.Actor, KeyLeakReported{
			SecretHash: cmd.SecretHash, Masked: cmd.Masked, Source: cmd.Source, URL: cmd.URL, Reporter: cmd.Reporter,
		}))
	}
	if cmd.Revoke && k.Live(cmd.SecretHash, now) {
		reason := "leaked: reported by " + cmd.Reporter
		if cmd.URL != "" {
			reason += " at " + cmd.URL
		}
		if utf8.RuneCountInString(reason) > MaxReasonLen {
			reason = string([]rune(reason)[:MaxReasonLen-1]) + "…"
		}
		out = append(out, k.event(TypeKeyRevoked, now, cmd.By.Actor, KeyRevoked{Reason: strings.TrimSpace(reason)}))
	}
	return out, nil
}
