package http_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"

	khttp "github.com/keyledger/keyledger/http"
)

// The attack suite: each test drives the real stack (an embedded
// nats-server, the projections following the stream, the API on a real
// HTTP server) the way an attacker would, and holds a hole closed.

// TestAttackNegativeGrace: a negative grace period must be refused, not
// wrap around into a long one when seconds become a Duration.
func TestAttackNegativeGrace(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "target"})
	for _, body := range []string{
		`{"grace_period_seconds": -9223372036854771808}`,
		`{"grace_period_seconds": -1}`,
		`{"grace_period_seconds": -9223372036854775808}`,
		`{"grace_period_seconds": 9223372036854775807}`,
	} {
		before := h.env.LastSeq(t)
		res := h.request("POST", "/v1/orgs/acme/keys/"+k.Key.ID+"/rotate", admin, body)
		if res.StatusCode != http.StatusBadRequest || res.errorCode() != "invalid" {
			t.Errorf("%s: %d %s, want 400 invalid", body, res.StatusCode, res.body)
		}
		if after := h.env.LastSeq(t); after != before {
			t.Errorf("%s: the stream moved from %d to %d", body, before, after)
		}
	}
	if got := h.verify(k.Secret); got.Code != "VALID" || got.Deprecated {
		t.Errorf("the key after the refused rotations: %+v, want its secret VALID as before", got)
	}
}

// TestAttackUnverifiedEmailIsNotTheActorName: anyone may put any email in
// their profile at many providers; only one the provider verified may name
// the actor of an audit event. Otherwise the name, then the subject.
func TestAttackUnverifiedEmailIsNotTheActorName(t *testing.T) {
	p := newIDP(t)
	p.addKey("rsa-1", jose.RS256, true)
	h := startWith(t, t.TempDir(), withOIDC(p, khttp.Limit{}))
	h.waitDiscovered(p.sign("rsa-1", p.claims()))
	for _, tt := range []struct {
		name   string
		claims func(map[string]any)
		want   string
	}{
		{"UnverifiedEmailAndName", func(c map[string]any) {
			c["email"], c["email_verified"], c["name"] = "ceo@acme.example", false, "Mallory"
		}, "Mallory"},
		{"UnverifiedEmailOnly", func(c map[string]any) { c["email"], c["email_verified"] = "ceo@acme.example", false }, "user-42"},
		{"EmailWithoutEmailVerified", func(c map[string]any) { c["email"] = "ceo@acme.example" }, "user-42"},
		{"EmailVerifiedAsAString", func(c map[string]any) { c["email"], c["email_verified"] = "ceo@acme.example", "false" }, "user-42"},
		{"VerifiedEmail", func(c map[string]any) {
			c["email"], c["email_verified"], c["name"] = "ada@acme.example", true, "Ada"
		}, "ada@acme.example"},
		{"VerifiedEmailAsTheStringTrue", func(c map[string]any) { c["email"], c["email_verified"] = "ada@acme.example", "true" }, "ada@acme.example"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			token := p.sign("rsa-1", p.claims(func(c map[string]any) { delete(c, "email"); delete(c, "email_verified"); tt.claims(c) }))
			k := h.create("acme", token, map[string]any{"name": "made by " + tt.name})
			if got := k.Key.CreatedBy; got.Kind != "user" || got.ID != "user-42" || got.Name != tt.want {
				t.Errorf("created_by = %+v, want the user user-42 named %q", got, tt.want)
			}
			evs := h.history("acme", k.Key.ID, token)
			if len(evs) != 1 || evs[0].Actor.Name != tt.want {
				t.Errorf("the history: %d events, the first by %+v, want one by %q", len(evs), evs[0].Actor, tt.want)
			}
		})
	}
}

// TestAttackKeysInPathsStayOutOfTheLog: a client that puts a full key in a
// path or a query string (by mistake, or to plant it in the logs) finds it
// masked in the access line, wherever in the URL it sits.
func TestAttackKeysInPathsStayOutOfTheLog(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "leaked"})
	secret := k.Secret
	prefix, body, _ := strings.Cut(secret, "_")
	for _, path := range []string{
		"/v1/orgs/acme/keys/" + secret,
		"/v1/orgs/acme/keys/" + secret + "/events",
		"/v1/orgs/" + secret + "/keys",
		"/" + secret + "/configuration/api-keys",
		"/v1/orgs/acme/keys?cursor=" + secret,
		"/v1/orgs/acme/keys?status=all&key=" + prefix + "%5F" + body,
		"/v1/whoami?min_seq=1&api_key=" + url.QueryEscape(secret),
		"/nowhere/" + url.PathEscape(secret) + "?x=" + strings.ReplaceAll(secret, "_", "%5f"),
	} {
		h.request("GET", path, admin, nil)
	}
	h.request("POST", "/v1/verify?key="+secret, "", map[string]string{"key": "nope"})
	logs := h.logs.String()
	if strings.Contains(logs, secret) || strings.Contains(logs, body) {
		t.Errorf("a key sent in a URL reached the log:\n%s", logs)
	}
	if !strings.Contains(logs, `"path":"/v1/orgs/acme/keys/`+prefix+`_****`+body[len(body)-4:]+`"`) {
		t.Errorf("the access line does not show the masked key in its path:\n%s", logs)
	}
}
