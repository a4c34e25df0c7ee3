package http_test

import (
	"net/http"
	"testing"
)

// TestAttackRotationCannotEscalate replays item 1 of the attack: a key
// holding only keys:manage may not create a key with invoices:read, and
// must not reach that scope by rotating (or take over by revoking) a key
// that holds it — not another key, not the org's first admin key.
func TestAttackRotationCannotEscalate(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme", "keys:manage", "invoices:read")
	weak := h.create("acme", admin, map[string]any{"name": "weak manager", "scopes": []string{"keys:manage"}})
	billing := h.create("acme", admin, map[string]any{"name": "billing", "scopes": []string{"invoices:read"}})
	adminID := h.list("acme", admin, "")[0].ID
	for _, k := range h.list("acme", admin, "") {
		if k.Name == "admin of acme" {
			adminID = k.ID
		}
	}

	h.must(http.StatusForbidden, "POST", "/v1/orgs/acme/keys", weak.Secret, map[string]any{"name": "x", "scopes": []string{"invoices:read"}})
	before := h.env.LastSeq(t)
	for _, target := range []string{billing.Key.ID, adminID} {
		res := h.request("POST", "/v1/orgs/acme/keys/"+target+"/rotate", weak.Secret, nil)
		if res.StatusCode != http.StatusForbidden || res.errorCode() != "forbidden" {
			t.Errorf("weak key rotating %s: %d %s, want 403 forbidden", target, res.StatusCode, res.body)
		}
		res = h.request("DELETE", "/v1/orgs/acme/keys/"+target, weak.Secret, nil)
		if res.StatusCode != http.StatusForbidden || res.errorCode() != "forbidden" {
			t.Errorf("weak key revoking %s: %d %s, want 403 forbidden", target, res.StatusCode, res.body)
		}
	}
	if after := h.env.LastSeq(t); after != before {
		t.Errorf("refused rotations and revocations appended %d events", after-before)
	}
	if v := h.verify(admin); v.Code != "VALID" {
		t.Errorf("the admin key answers %s after the attack, want VALID", v.Code)
	}

	// What the weak key could have granted itself, it may act on: its own
	// kind of key, and itself.
	peer := h.create("acme", weak.Secret, map[string]any{"name": "peer", "scopes": []string{"keys:manage"}})
	h.rotate("acme", peer.Key.ID, weak.Secret, nil)
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+peer.Key.ID, weak.Secret, nil)
	// The admin, holding both scopes, may act on either.
	h.rotate("acme", billing.Key.ID, admin, nil)
}
