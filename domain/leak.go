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
	// MaxLeaksPerKey is how many leak reports a key records: past it, a
	// report of another place appends nothing (the key is revoked, and its
	// managers know), so that reports of one secret at ever new URLs
	// cannot grow the stream, nor the key's history, without end.
	MaxLeaksPerKey = 100
)

// LeakPlace is where a leaked secret was found.
type LeakPlace struct {
	Source string
	URL    string
}

// ReportLeak says that a secret of a key was found where it should not be.
type ReportLeak struct {
	SecretHash string // of the secret found: HashSecret
	Masked     string
	Source     string
	URL        string
	Reporter   string
	// More are other places the same report found the same secret at.
	More []LeakPlace
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
	fields := []struct {
		name, value string
		max         int
	}{{"url", cmd.URL, MaxLeakURLLen}, {"source", cmd.Source, MaxLeakSourceLen}, {"reporter", cmd.Reporter, MaxLeakReporterLen}}
	for _, p := range cmd.More {
		fields = append(fields, struct {
			name, value string
			max         int
		}{"url", p.URL, MaxLeakURLLen}, struct {
			name, value string
			max         int
		}{"source", p.Source, MaxLeakSourceLen})
	}
	for _, f := range fields {
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
// KeyLeakReported for each place (URL) where this secret's leak is not on
// record yet, as long as the key has room (MaxLeaksPerKey); then a
// KeyRevoked, when the report asks for it and the secret still opens the
// key. A repeated report calls for nothing; one whose
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
	known := map[string]bool{}
	for _, l := range k.Leaks {
		if l.SecretHash == cmd.SecretHash {
			known[l.URL] = true
		}
	}
	room := MaxLeaksPerKey - len(k.Leaks)
	for _, p := range append([]LeakPlace{{Source: cmd.Source, URL: cmd.URL}}, cmd.More...) {
		if known[p.URL] || room <= 0 {
			continue
		}
		known[p.URL] = true
		room--
		out = append(out, k.event(TypeKeyLeakReported, now, cmd.By.Actor, KeyLeakReported{
			SecretHash: cmd.SecretHash, Masked: cmd.Masked, Source: p.Source, URL: p.URL, Reporter: cmd.Reporter,
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
