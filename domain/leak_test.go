package domain_test

import (
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

var scanner = domain.SystemPrincipal("secret-scanning", "GitHub secret scanning")

// apply applies the events a decision returned, in order.
func apply(t *testing.T, k *domain.Key, evs []domain.Event) {
	t.Helper()
	for _, e := range evs {
		e.Seq = k.Version + 1
		if err := k.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
}

func types(evs []domain.Event) []domain.EventType {
	var out []domain.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// TestDecideLeak: a leaked live secret is recorded and revokes the key; a
// repeat calls for nothing; another URL is recorded, revoking nothing more;
// a replaced secret in its grace period revokes, one past it is only
// recorded; notify records without revoking; who may report and what a
// report may hold are checked.
func TestDecideLeak(t *testing.T) {
	report := func(k *domain.Key, secret, url string, revoke bool, by domain.Principal) ([]domain.Event, error) {
		return k.DecideLeak(domain.ReportLeak{SecretHash: domain.HashSecret(secret), Masked: domain.MaskSecret(secret), Source: "content",
			URL: url, Reporter: "github", Revoke: revoke, By: by}, t0.Add(time.Hour))
	}
	want := func(got []domain.Event, err error, types_ ...domain.EventType) {
		t.Helper()
		if err != nil || len(got) != len(types_) {
			t.Fatalf("decided %v, %v; want %v", types(got), err, types_)
		}
		for i := range got {
			if got[i].Type != types_[i] {
				t.Fatalf("decided %v, want %v", types(got), types_)
			}
		}
	}

	k, secret := newKey(t, time.Time{})
	evs, err := report(k, secret, "https://github.com/acme/app/blob/main/.env", true, scanner)
	want(evs, err, domain.TypeKeyLeakReported, domain.TypeKeyRevoked)
	if d := evs[0].Data.(domain.KeyLeakReported); d.SecretHash != domain.HashSecret(secret) || d.URL == "" || evs[0].Actor.ID != "secret-scanning" {
		t.Errorf("the leak event: %+v %+v", d, evs[0].Actor)
	}
	apply(t, k, evs)
	evs, err = report(k, secret, "https://github.com/acme/app/blob/main/.env", true, scanner)
	want(evs, err) // a repeat
	evs, err = report(k, secret, "https://gist.github.com/x", true, scanner)
	want(evs, err, domain.TypeKeyLeakReported) // recorded, the key is revoked already

	// A replaced secret: during its grace period it revokes, after it not.
	k2, old := newKey(t, time.Time{})
	rotate(t, k2, t0, 2*time.Hour)
	evs, err = report(k2, old, "", true, scanner)
	want(evs, err, domain.TypeKeyLeakReported, domain.TypeKeyRevoked)
	k3, old3 := newKey(t, time.Time{})
	rotate(t, k3, t0, time.Minute)
	evs, err = report(k3, old3, "", true, scanner)
	want(evs, err, domain.TypeKeyLeakReported)

	// notify: recorded, not revoked; its revocation comes when asked for.
	k4, s4 := newKey(t, time.Time{})
	evs, err = report(k4, s4, "u", false, scanner)
	want(evs, err, domain.TypeKeyLeakReported)
	apply(t, k4, evs)
	evs, err = report(k4, s4, "u", true, scanner)
	want(evs, err, domain.TypeKeyRevoked) // a half-landed report, retried: the revocation alone

	// Who may report, and what.
	reader := domain.KeyPrincipal(domain.Key{ID: "key_R", OrgID: "globex", Scopes: []string{"read"}})
	reporter := domain.KeyPrincipal(domain.Key{ID: "key_S", OrgID: "globex", Scopes: []string{domain.ScopeLeaksReport}})
	member := domain.PersonPrincipal("bob", "bob", map[string]string{"acme": "member"})
	manager := domain.PersonPrincipal("eve", "eve", map[string]string{"globex": domain.RoleManager})
	k5, s5 := newKey(t, time.Time{})
	for _, p := range []domain.Principal{reader, member} {
		if _, err := report(k5, s5, "", true, p); domain.ErrorCode(err) != domain.EFORBIDDEN {
			t.Errorf("%s reported a leak: %v", p.Actor.ID, err)
		}
	}
	for _, p := range []domain.Principal{reporter, manager} {
		if _, err := report(k5, s5, "", true, p); err != nil {
			t.Errorf("%s may report a leak of another org's key (the secret is the proof): %v", p.Actor.ID, err)
		}
	}
	for _, url := range []string{"https://x\n", string(make([]byte, domain.MaxLeakURLLen+1))} {
		if _, err := report(k5, s5, url, true, scanner); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("url %.20q: %v", url, err)
		}
	}
}

// TestDecideLeakIsBounded: one report of a secret at many places records
// each new place once, at most MaxLeaksPerKey for a key, then only revokes.
func TestDecideLeakIsBounded(t *testing.T) {
	k, secret := newKey(t, time.Time{})
	var more []domain.LeakPlace
	for i := range 3 * domain.MaxLeaksPerKey {
		more = append(more, domain.LeakPlace{Source: "content", URL: "https://github.com/o/r/blob/c/f" + string(rune('a'+i%26)) + string(rune('0'+i/26%10)) + string(rune('0'+i/260))})
	}
	more = append(more, more[0]) // the same place twice
	evs, err := k.DecideLeak(domain.ReportLeak{SecretHash: domain.HashSecret(secret), Masked: domain.MaskSecret(secret), URL: "first", More: more, Reporter: "github", Revoke: true, By: scanner}, t0.Add(time.Hour))
	if err != nil || len(evs) != domain.MaxLeaksPerKey+1 || evs[len(evs)-1].Type != domain.TypeKeyRevoked {
		t.Fatalf("decided %d events (%v), want %d leaks and a revocation", len(evs), err, domain.MaxLeaksPerKey)
	}
	apply(t, k, evs)
	evs, err = k.DecideLeak(domain.ReportLeak{SecretHash: domain.HashSecret(secret), URL: "yet another place", Reporter: "github", Revoke: true, By: scanner}, t0.Add(2*time.Hour))
	if err != nil || len(evs) != 0 {
		t.Errorf("a key with %d leaks recorded, revoked: decided %v, %v; want nothing", domain.MaxLeaksPerKey, types(evs), err)
	}
}
