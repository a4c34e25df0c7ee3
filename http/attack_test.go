package http_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/apitest"
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

// peerHeader names, in the attack tests, the peer address a request comes
// from. This machine has one IPv6 loopback address, so a wrapper stands in
// for the network: it sets RemoteAddr as net/http would have for a
// connection from that address; the limiters and everything after are
// the real ones.
const peerHeader = "X-Test-Peer"

func fromPeers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if peer := r.Header.Get(peerHeader); peer != "" {
			r.RemoteAddr = peer
		}
		next.ServeHTTP(w, r)
	})
}

// TestAttackIPv6AddressSpray: one host holds a whole /64 (2^64
// addresses), so a budget per address is no budget. Rate limits are per
// /64 for IPv6, per address for IPv4, an IPv4-mapped IPv6 address counts
// as its IPv4 address, and spraying more prefixes than the limiter tracks
// does not buy fresh budgets.
func TestAttackIPv6AddressSpray(t *testing.T) {
	const budget = 3
	var clock atomic.Int64 // nanoseconds added to the real time
	startLimited := func(t *testing.T, clients int) *harness {
		return startOpts(t, t.TempDir(), apitest.Options{Wrap: fromPeers, Configure: func(s *khttp.Server) {
			s.AuthFailureLimit = khttp.Limit{Per: budget, Every: time.Hour}
			s.VerifyLimit = khttp.Limit{Per: budget, Every: time.Hour}
			s.RateLimitClients = clients
			s.Now = func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }
		}})
	}
	wrong := mustSecret(t)
	// failures sends a failing authentication from each peer and counts
	// the 401s; every other answer must be a 429.
	failures := func(t *testing.T, h *harness, peers []string) int {
		t.Helper()
		n := 0
		for _, peer := range peers {
			switch res := h.request("GET", "/v1/whoami", wrong, nil, peerHeader, peer); res.StatusCode {
			case http.StatusUnauthorized:
				n++
			case http.StatusTooManyRequests:
			default:
				t.Fatalf("from %s: %d %s", peer, res.StatusCode, res.body)
			}
		}
		return n
	}

	t.Run("OneSlash64SharesOneBudget", func(t *testing.T) {
		h := startLimited(t, 0)
		var peers []string
		for i := range 40 {
			peers = append(peers, fmt.Sprintf("[2001:db8:1:2:%x:%x:%x:%x]:443", (i*7919)&0xffff, i, 65535-i, i*31))
		}
		if got := failures(t, h, peers); got != budget {
			t.Errorf("40 addresses of one /64 had %d failed authentications, want one budget of %d", got, budget)
		}
		verified := 0
		for _, peer := range peers {
			if h.request("POST", "/v1/verify", "", map[string]string{"key": "x"}, peerHeader, peer).StatusCode == http.StatusOK {
				verified++
			}
		}
		if verified != budget {
			t.Errorf("40 addresses of one /64 had %d verifications, want one budget of %d", verified, budget)
		}
		// The next /64 is another client.
		if got := failures(t, h, []string{"[2001:db8:1:3::1]:443"}); got != 1 {
			t.Errorf("the neighbouring /64 had %d failures, want its own budget", got)
		}
	})

	t.Run("IPv4MappedIPv6IsTheIPv4Address", func(t *testing.T) {
		h := startLimited(t, 0)
		peers := []string{"192.0.2.7:1000", "[::ffff:192.0.2.7]:1001", "[::ffff:c000:207]:1002", "192.0.2.7:1003", "[::ffff:192.0.2.7]:1004"}
		if got := failures(t, h, peers); got != budget {
			t.Errorf("192.0.2.7 as IPv4 and as IPv4-mapped IPv6 had %d failures, want one budget of %d", got, budget)
		}
		if got := failures(t, h, []string{"192.0.2.8:1000"}); got != 1 {
			t.Errorf("another IPv4 address had %d failures, want its own budget", got)
		}
	})

	t.Run("SprayingMorePrefixesThanTrackedBuysNoBudget", func(t *testing.T) {
		const tracked = 8
		h := startLimited(t, tracked)
		var peers []string
		for i := range 200 {
			peers = append(peers, fmt.Sprintf("[2001:db8:%x:%x::1]:443", i/256, i%256))
		}
		// Each tracked prefix spends one of its own budget; the rest share
		// one overflow budget.
		if got, most := failures(t, h, peers), tracked+budget; got > most {
			t.Errorf("200 prefixes had %d failed authentications, want at most %d (%d tracked, then one shared budget of %d)", got, most, tracked, budget)
		}
		// Once the tracked budgets have refilled, they are forgotten (a
		// full bucket is a fresh one), and new prefixes are tracked again.
		clock.Add(int64(2 * time.Hour))
		defer clock.Store(0)
		if got := failures(t, h, []string{"[2001:db8:ffff:1::1]:443", "[2001:db8:ffff:2::1]:443"}); got != 2 {
			t.Errorf("after the budgets refilled, 2 new prefixes had %d failures, want 2", got)
		}
	})
}
