package http_test

import (
	"net/http"
	"testing"
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
