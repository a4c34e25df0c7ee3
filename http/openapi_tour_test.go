package http_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
)

// tour drives every route of one instance through the conformance check,
// with the answers a user meets: successes, each kind of refusal, and at
// the end an outage of the event store.
type tour struct {
	t    *testing.T
	h    *harness
	cl   *client
	down chan struct{} // closed once the instance has lost NATS

	admin, keys string // acme's management key; acme's keys path
	unknown     string // a well-formed key id no org has
}

func newTour(t *testing.T, c *conformance) *tour {
	t.Helper()
	env := natstest.Start(t)
	tr := &tour{t: t, down: make(chan struct{}), unknown: domain.NewKeyID(), keys: "/v1/orgs/acme/keys"}
	// Unreachable is wired as serve wires it: from the connection's own
	// account of losing the server.
	var since atomic.Int64
	var once sync.Once
	env.Embedded.Conn.SetDisconnectErrHandler(func(*nats.Conn, error) {
		since.CompareAndSwap(0, time.Now().UnixNano())
		once.Do(func() { close(tr.down) })
	})
	tr.h = instance(t, env, func(s *khttp.Server) {
		s.CommandTimeout = time.Second
		s.Unreachable = func() time.Time {
			if n := since.Load(); n != 0 {
				return time.Unix(0, n)
			}
			return time.Time{}
		}
	})
	tr.cl = c.client(t, tr.h)
	tr.admin = tr.h.bootstrap("acme")
	tr.h.bootstrap("globex")
	return tr
}

func (tr *tour) run() {
	tr.operations()
	created, second := tr.create()
	tr.list(created)
	tr.get(created)
	rotated := tr.rotate(created)
	tr.revoke(second)
	tr.history(second)
	tr.streams(rotated)
	tr.verify(rotated, second)
	tr.outage(created, rotated)
}

func (tr *tour) operations() {
	cl := tr.cl
	cl.do(200, "GET", "/healthz", "", nil)
	if got := decodeAs[struct{ Status string }](tr.t, cl.do(200, "GET", "/readyz", "", nil)); got.Status != "ready" {
		tr.t.Errorf("readyz: %q, want ready", got.Status)
	}
	cl.do(200, "GET", "/metrics", "", nil)
	cl.do(200, "GET", "/openapi.json", "", nil)
	cl.do(200, "GET", "/v1/audit/pubkey", "", nil)
	cl.do(200, "GET", "/v1/audit/signers", "", nil)
	cl.do(404, "GET", "/v1/audit/head", "", nil) // no checkpoint yet
	if _, _, err := (&events.Checkpointer{Store: tr.h.env.Store}).Once(context.Background()); err != nil {
		tr.t.Fatal(err)
	}
	cl.do(200, "GET", "/v1/audit/head", "", nil)
	cl.do(200, "GET", "/acme/configuration/api-keys", "", nil)
	cl.broken(404, "GET", "/Not_An_Org/configuration/api-keys", "", nil)
	cl.do(200, "GET", "/assets/keyledger/app.css", "", nil)
	cl.do(200, "GET", "/assets/keyledger/app.js", "", nil)
	cl.broken(404, "GET", "/assets/keyledger/index.html", "", nil)
	if res := cl.do(200, "GET", "/healthz", "", nil, "X-Request-Id", "trace-7"); res.Header.Get("X-Request-Id") != "trace-7" {
		tr.t.Errorf("X-Request-Id %q, want the caller's trace-7", res.Header.Get("X-Request-Id"))
	}
}

// create makes two keys of acme and answers each refusal of a create.
func (tr *tour) create() (created, second issued) {
	cl, keys, admin := tr.cl, tr.keys, tr.admin
	expires := time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	res := cl.do(201, "POST", keys, admin, map[string]any{"name": "billing worker", "scopes": []string{"invoices:read"}, "expires_at": expires})
	created = decodeAs[issued](tr.t, res)
	mustHeader(tr.t, res, "Location", keys+"/"+created.Key.ID)

	second = decodeAs[issued](tr.t, cl.do(201, "POST", keys, admin, map[string]any{"name": "retried"}, "Idempotency-Key", "create-1"))
	replay := cl.do(201, "POST", keys, admin, map[string]any{"name": "retried"}, "Idempotency-Key", "create-1")
	mustHeader(tr.t, replay, "Idempotent-Replayed", "true")
	if again := decodeAs[issued](tr.t, replay); again.Key.ID != second.Key.ID {
		tr.t.Errorf("a replayed create made key %s, want %s", again.Key.ID, second.Key.ID)
	}
	cl.do(409, "POST", keys, admin, map[string]any{"name": "another"}, "Idempotency-Key", "create-1")

	cl.broken(400, "POST", keys, admin, `{"name": `)
	cl.broken(400, "POST", keys, admin, map[string]any{"name": "x", "colour": "red"})
	cl.do(400, "POST", keys, admin, map[string]any{"name": "x", "expires_at": "2001-01-01T00:00:00Z"})
	cl.broken(400, "POST", "/v1/orgs/ACME/keys", admin, map[string]any{"name": "x"})
	cl.broken(401, "POST", keys, "", map[string]any{"name": "x"})
	cl.do(401, "POST", keys, "not-a-key", map[string]any{"name": "x"})
	cl.do(403, "POST", "/v1/orgs/globex/keys", admin, map[string]any{"name": "x"})
	cl.do(403, "POST", keys, admin, map[string]any{"name": "x", "scopes": []string{"billing:write"}})
	cl.do(413, "POST", keys, admin, padded(`{"name": "x"}`))
	cl.broken(415, "POST", keys, admin, "name=x", "Content-Type", "application/x-www-form-urlencoded")
	return created, second
}

func (tr *tour) list(created issued) {
	cl, keys, admin := tr.cl, tr.keys, tr.admin
	first := decodeAs[struct {
		Keys       []keyView
		NextCursor string `json:"next_cursor"`
	}](tr.t, cl.do(200, "GET", keys+"?limit=1", admin, nil))
	if len(first.Keys) != 1 || first.NextCursor == "" {
		tr.t.Fatalf("first page of 1: %d keys, next cursor %q", len(first.Keys), first.NextCursor)
	}
	cl.do(200, "GET", keys+"?status=all&cursor="+first.NextCursor, admin, nil)
	expiring := decodeAs[struct{ Keys []keyView }](tr.t, cl.do(200, "GET", keys+"?expiring_within=60d", admin, nil))
	if len(expiring.Keys) != 1 || !contains(expiring.Keys, created.Key.ID) {
		tr.t.Errorf("expiring within 60 days: %+v, want the one key with an expiry", expiring.Keys)
	}
	asOf := decodeAs[struct {
		AsOf string `json:"as_of"`
		Keys []keyView
	}](tr.t, cl.do(200, "GET", keys+"?as_of="+url.QueryEscape(time.Now().UTC().Format(time.RFC3339Nano)), admin, nil))
	if asOf.AsOf == "" || !contains(asOf.Keys, created.Key.ID) {
		tr.t.Errorf("as of now: %+v, want the keys as they stand", asOf)
	}
	now := url.QueryEscape(time.Now().UTC().Format(time.RFC3339Nano))
	asOfFirst := decodeAs[struct {
		Keys       []keyView
		NextCursor string `json:"next_cursor"`
	}](tr.t, cl.do(200, "GET", keys+"?limit=1&as_of="+now, admin, nil))
	if len(asOfFirst.Keys) != 1 || asOfFirst.NextCursor != asOfFirst.Keys[0].ID {
		tr.t.Errorf("as of now, a page of 1: %+v", asOfFirst)
	}
	cl.do(200, "GET", keys+"?as_of="+now+"&cursor="+asOfFirst.NextCursor, admin, nil)

	cl.broken(400, "GET", keys+"?status=gone", admin, nil)
	cl.broken(400, "GET", keys+"?limit=0", admin, nil)
	cl.do(400, "GET", keys+"?expiring_within=soon", admin, nil)
	cl.broken(400, "GET", keys+"?as_of=yesterday", admin, nil)
	cl.broken(401, "GET", keys, "", nil)
	cl.do(403, "GET", "/v1/orgs/globex/keys", admin, nil)
}

func (tr *tour) get(created issued) {
	cl, keys, admin := tr.cl, tr.keys, tr.admin
	path := keys + "/" + created.Key.ID
	res := cl.do(200, "GET", path, admin, nil)
	if got := decodeAs[keyView](tr.t, res); got.Masked != created.Key.Masked {
		tr.t.Errorf("masked %q, want %q", got.Masked, created.Key.Masked)
	}
	mustHeader(tr.t, cl.do(304, "GET", path, admin, nil, "If-None-Match", etagOf(res)), "ETag", etagOf(res))
	cl.broken(400, "GET", keys+"/key_nope", admin, nil)
	cl.do(404, "GET", keys+"/"+tr.unknown, admin, nil)
	cl.do(401, "GET", path, "not-a-key", nil)
	cl.do(403, "GET", "/v1/orgs/globex/keys/"+created.Key.ID, admin, nil)
}

// rotate rotates the key twice, the second time with a grace period, and
// answers each refusal of a rotation.
func (tr *tour) rotate(k issued) issued {
	cl, admin := tr.cl, tr.admin
	path := tr.keys + "/" + k.Key.ID + "/rotate"
	first := cl.do(200, "POST", path, admin, nil)
	body := map[string]any{"grace_period_seconds": 3600}
	res := cl.do(200, "POST", path, admin, body, "If-Match", etagOf(first), "Idempotency-Key", "rotate-1")
	rotated := decodeAs[issued](tr.t, res)
	replay := cl.do(200, "POST", path, admin, body, "If-Match", etagOf(first), "Idempotency-Key", "rotate-1")
	mustHeader(tr.t, replay, "Idempotent-Replayed", "true")
	mustHeader(tr.t, replay, "X-Keyledger-Seq", res.Header.Get("X-Keyledger-Seq"))

	cl.do(412, "POST", path, admin, nil, "If-Match", etagOf(first))
	cl.broken(400, "POST", path, admin, map[string]any{"grace_period_seconds": -1})
	cl.do(400, "POST", path, admin, nil, "If-Match", "soon")
	cl.do(404, "POST", tr.keys+"/"+tr.unknown+"/rotate", admin, nil)
	cl.do(413, "POST", path, admin, padded(`{"grace_period_seconds": 60}`))
	cl.broken(415, "POST", path, admin, "{}", "Content-Type", "text/plain")
	cl.do(401, "POST", path, "not-a-key", nil)
	cl.do(403, "POST", "/v1/orgs/globex/keys/"+k.Key.ID+"/rotate", admin, nil)
	return rotated
}

// revoke revokes the key, answers each refusal of a revocation, and that a
// revoked key can be neither revoked nor rotated again.
func (tr *tour) revoke(k issued) {
	cl, admin := tr.cl, tr.admin
	path := tr.keys + "/" + k.Key.ID
	cl.do(412, "DELETE", path, admin, nil, "If-Match", `"1"`)
	cl.broken(400, "DELETE", path, admin, map[string]any{"reason": strings.Repeat("r", 501)})
	cl.do(404, "DELETE", tr.keys+"/"+tr.unknown, admin, nil)
	cl.do(413, "DELETE", path, admin, padded(`{"reason": "x"}`))
	cl.broken(415, "DELETE", path, admin, `{"reason": "x"}`, "Content-Type", "text/plain")
	cl.do(401, "DELETE", path, "not-a-key", nil)
	cl.do(403, "DELETE", "/v1/orgs/globex/keys/"+k.Key.ID, admin, nil)

	body := map[string]any{"reason": "rotated out"}
	cl.do(204, "DELETE", path, admin, body, "Idempotency-Key", "revoke-1")
	mustHeader(tr.t, cl.do(204, "DELETE", path, admin, body, "Idempotency-Key", "revoke-1"), "Idempotent-Replayed", "true")
	if res := cl.do(409, "DELETE", path, admin, nil); res.errorCode() != "key_revoked" {
		tr.t.Errorf("revoke twice: %s, want key_revoked", res.body)
	}
	if res := cl.do(409, "POST", path+"/rotate", admin, nil); res.errorCode() != "key_revoked" {
		tr.t.Errorf("rotate a revoked key: %s, want key_revoked", res.body)
	}
}

// history reads a revoked key's events and the org's, with each filter.
func (tr *tour) history(revoked issued) {
	cl, keys, admin := tr.cl, tr.keys, tr.admin
	own := decodeAs[struct{ Events []eventView }](tr.t, cl.do(200, "GET", keys+"/"+revoked.Key.ID+"/events", admin, nil))
	if len(own.Events) != 2 || own.Events[0].Type != "KeyCreated" || own.Events[1].Type != "KeyRevoked" {
		tr.t.Errorf("history of a created, then revoked key: %+v", own.Events)
	}
	paged := decodeAs[struct {
		Events       []eventView
		NextAfterSeq uint64 `json:"next_after_seq"`
		More         bool
	}](tr.t, cl.do(200, "GET", keys+"/"+revoked.Key.ID+"/events?limit=1&after_seq=0", admin, nil))
	if len(paged.Events) != 1 || !paged.More || paged.NextAfterSeq != own.Events[0].Seq {
		tr.t.Errorf("a key's history a page of 1 at a time: %+v", paged)
	}
	cl.broken(400, "GET", keys+"/"+revoked.Key.ID+"/events?limit=0", admin, nil)
	cl.broken(400, "GET", keys+"/key_nope/events", admin, nil)
	cl.do(404, "GET", keys+"/"+tr.unknown+"/events", admin, nil)
	cl.do(401, "GET", keys+"/"+revoked.Key.ID+"/events", "not-a-key", nil)
	cl.do(403, "GET", "/v1/orgs/globex/keys/"+revoked.Key.ID+"/events", admin, nil)

	events := "/v1/orgs/acme/events"
	page := decodeAs[struct {
		Events       []eventView
		NextAfterSeq uint64 `json:"next_after_seq"`
	}](tr.t, cl.do(200, "GET", events+"?limit=2", admin, nil))
	if len(page.Events) != 2 || page.NextAfterSeq != page.Events[1].Seq {
		tr.t.Errorf("a page of 2: %d events, next after %d", len(page.Events), page.NextAfterSeq)
	}
	q := url.Values{
		"after_seq": {"0"}, "type": {"KeyCreated,KeyRevoked"}, "key_id": {revoked.Key.ID},
		"actor": {own.Events[1].Actor.ID}, "since": {own.Events[0].OccurredAt}, "until": {time.Now().UTC().Format(time.RFC3339Nano)},
	}
	filtered := decodeAs[struct{ Events []eventView }](tr.t, cl.do(200, "GET", events+"?"+q.Encode(), admin, nil))
	if len(filtered.Events) != 2 {
		tr.t.Errorf("filtered to the revoked key's events: %+v", filtered.Events)
	}
	cl.broken(400, "GET", events+"?type=KeyDeleted", admin, nil)
	cl.broken(400, "GET", events+"?since=yesterday", admin, nil)
	cl.do(401, "GET", events, "not-a-key", nil)
	cl.do(403, "GET", "/v1/orgs/globex/events", admin, nil)
}

func (tr *tour) streams(rotated issued) {
	cl, admin := tr.cl, tr.admin
	all := cl.stream(2, "/v1/orgs/acme/events/stream?after_seq=0", admin)
	if all[0].Seq >= all[1].Seq {
		tr.t.Errorf("stream out of order: %d then %d", all[0].Seq, all[1].Seq)
	}
	cl.stream(1, "/v1/orgs/acme/events/stream", admin, "Last-Event-ID", "1")
	revoked := cl.stream(1, "/v1/events/stream?after_seq=0&types=KeyRevoked", admin)
	if revoked[0].Type != "KeyRevoked" {
		tr.t.Errorf("a stream of revocations sent a %s", revoked[0].Type)
	}

	cl.broken(400, "GET", "/v1/orgs/acme/events/stream", admin, nil, "Last-Event-ID", "soon")
	cl.broken(400, "GET", "/v1/events/stream?types=KeyDeleted", admin, nil)
	cl.broken(401, "GET", "/v1/events/stream", "", nil)
	cl.do(401, "GET", "/v1/orgs/acme/events/stream", "not-a-key", nil)
	cl.do(403, "GET", "/v1/events/stream", rotated.Secret, nil) // it lacks events:read
	cl.do(403, "GET", "/v1/orgs/globex/events/stream", admin, nil)
}

func (tr *tour) verify(rotated, revoked issued) {
	cl := tr.cl
	for _, tc := range []struct{ secret, code string }{
		{rotated.Secret, "VALID"}, {revoked.Secret, "REVOKED"}, {"c8k_EXAMPLE", "MALFORMED"},
	} {
		got := decodeAs[verifyView](tr.t, cl.do(200, "POST", "/v1/verify", "", map[string]string{"key": tc.secret}))
		if got.Code != tc.code {
			tr.t.Errorf("verify: %s, want %s", got.Code, tc.code)
		}
	}
	cl.broken(400, "POST", "/v1/verify", "", `{"key": `)
	cl.do(413, "POST", "/v1/verify", "", padded(`{"key": "x"}`))
	cl.broken(415, "POST", "/v1/verify", "", `{"key": "x"}`, "Content-Type", "text/plain")

	if got := decodeAs[keyView](tr.t, cl.do(200, "GET", "/v1/whoami", rotated.Secret, nil)); got.ID != rotated.Key.ID {
		tr.t.Errorf("whoami: %s, want %s", got.ID, rotated.Key.ID)
	}
	cl.do(401, "GET", "/v1/whoami", revoked.Secret, nil)
	cl.broken(400, "GET", "/v1/whoami?min_seq=soon", rotated.Secret, nil)
}

// outage stops NATS under the instance: it is not ready, reads and
// verifications answer from memory and say how stale they may be, and
// writes answer 503.
func (tr *tour) outage(created, rotated issued) {
	cl, admin := tr.cl, tr.admin
	tr.h.env.Stop()
	select {
	case <-tr.down:
	case <-time.After(10 * time.Second):
		tr.t.Fatal("the connection did not report losing NATS within 10s")
	}
	ready := cl.do(503, "GET", "/readyz", "", nil)
	if got := decodeAs[struct{ Status string }](tr.t, ready); got.Status != "event store unreachable" {
		tr.t.Errorf("readyz while NATS is down: %q", got.Status)
	}
	path := tr.keys + "/" + created.Key.ID
	for _, res := range []response{
		ready,
		cl.do(200, "POST", "/v1/verify", "", map[string]string{"key": rotated.Secret}),
		cl.do(200, "GET", "/v1/whoami", rotated.Secret, nil),
		cl.do(200, "GET", path, admin, nil),
		cl.do(200, "GET", tr.keys, admin, nil),
	} {
		if res.Header.Get("X-Keyledger-Stale-Seconds") == "" || res.Header.Get("X-Keyledger-Applied-Seq") == "" {
			tr.t.Errorf("%s %s while NATS is down: no staleness headers", res.Request.Method, res.Request.URL.Path)
		}
	}
	cl.do(503, "POST", tr.keys, admin, map[string]any{"name": "while down"})
	cl.do(503, "POST", path+"/rotate", admin, nil)
	cl.do(503, "DELETE", path, admin, nil)
}

// limitsTour spends an instance's budgets of failed authentications and of
// verifications, and waits for sequences that never come.
func limitsTour(t *testing.T, c *conformance) {
	perHour := khttp.Limit{Per: 1, Every: time.Hour, Burst: 1}
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.AuthFailureLimit, s.VerifyLimit = perHour, perHour
		s.WaitTimeout = 10 * time.Millisecond
		s.Trust = nil
	})
	cl := c.client(t, h)
	admin := h.bootstrap("acme")
	key := "/v1/orgs/acme/keys/" + domain.NewKeyID()

	// A sequence beyond the stream's end would never come: 400 at once.
	ahead := fmt.Sprintf("?min_seq=%d", h.runner.Applied()+1_000_000)
	cl.do(400, "POST", "/v1/verify"+ahead, "", map[string]string{"key": admin})
	for _, path := range []string{"/v1/whoami", "/v1/orgs/acme/keys", key, key + "/events", "/v1/orgs/acme/events"} {
		cl.do(400, "GET", path+ahead, admin, nil)
	}
	cl.do(404, "GET", "/v1/audit/pubkey", "", nil) // this instance signs nothing
	cl.do(404, "GET", "/v1/audit/signers", "", nil)

	cl.do(429, "POST", "/v1/verify", "", map[string]string{"key": admin})
	cl.do(401, "GET", "/v1/whoami", "not-a-key", nil)
	// The address has spent its one failure: every authentication is now
	// refused, whatever the credential.
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/whoami"}, {"GET", "/v1/events/stream"}, {"GET", "/v1/orgs/acme/events/stream"},
		{"POST", "/v1/orgs/acme/keys"}, {"GET", "/v1/orgs/acme/keys"}, {"GET", key}, {"POST", key + "/rotate"},
		{"DELETE", key}, {"GET", key + "/events"}, {"GET", "/v1/orgs/acme/events"},
	} {
		var body any
		if r.path == "/v1/orgs/acme/keys" && r.method == "POST" {
			body = map[string]any{"name": "x"}
		}
		if res := cl.do(429, r.method, r.path, admin, body); res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 429 without Retry-After", r.method, r.path)
		}
	}
}

// overloadTour fills the one request slot and the one stream slot of an
// instance: every other request or stream is refused with 503 at once,
// except the health checks and metrics.
func overloadTour(t *testing.T, c *conformance) {
	var st stalledCreates
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.MaxInFlight, s.MaxStreams = 1, 1
		s.GitHubKeys = &khttp.GitHubKeys{File: "/nonexistent"}
		st.stall(s)
	})
	cl := c.client(t, h)
	admin := h.bootstrap("acme")
	key := "/v1/orgs/acme/keys/" + domain.NewKeyID()

	s := h.openStream("/v1/orgs/acme/events/stream", admin)
	select {
	case <-s.comments: // the opening comment: the stream holds its slot
	case <-time.After(10 * time.Second):
		t.Fatal("the stream sent no opening comment within 10s")
	}
	cl.do(503, "GET", "/v1/orgs/acme/events/stream", admin, nil)
	cl.do(503, "GET", "/v1/events/stream", admin, nil)
	s.cancel()

	release := holdRequestSlot(t, h, &st, admin)
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/openapi.json", nil}, {"GET", "/acme/configuration/api-keys", nil}, {"GET", "/assets/keyledger/app.js", nil},
		{"GET", "/v1/audit/pubkey", nil}, {"GET", "/v1/audit/signers", nil}, {"GET", "/v1/audit/head", nil},
		{"POST", "/v1/verify", map[string]string{"key": admin}}, {"GET", "/v1/whoami", nil},
		{"POST", "/v1/orgs/acme/keys", map[string]string{"name": "x"}}, {"GET", "/v1/orgs/acme/keys", nil}, {"GET", key, nil},
		{"POST", key + "/rotate", nil}, {"DELETE", key, nil}, {"GET", key + "/events", nil}, {"GET", "/v1/orgs/acme/events", nil},
		{"GET", key + "/usage", nil}, {"GET", "/v1/orgs/acme/usage", nil},
		{"POST", "/v1/leaks", map[string]string{"token": admin}}, {"POST", "/v1/secret-scanning/github", []map[string]string{{"token": admin}}},
	} {
		mustHeader(t, cl.do(503, r.method, r.path, admin, r.body), "Retry-After", "1")
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		cl.do(200, "GET", path, "", nil)
	}
	release()
}

// perClientTour lets a client have one request under way: while it has,
// every other request or stream from its address is refused with 429 at
// once, except the health checks and metrics.
func perClientTour(t *testing.T, c *conformance) {
	var st stalledCreates
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.MaxInFlightPerClient = 1
		st.stall(s)
	})
	cl := c.client(t, h)
	admin := h.bootstrap("acme")
	key := "/v1/orgs/acme/keys/" + domain.NewKeyID()
	release := holdRequestSlot(t, h, &st, admin)
	for _, r := range []struct {
		method, path string
		body         any
	}{
		{"GET", "/openapi.json", nil}, {"GET", "/acme/configuration/api-keys", nil}, {"GET", "/assets/keyledger/app.js", nil},
		{"GET", "/v1/audit/pubkey", nil}, {"POST", "/v1/verify", map[string]string{"key": admin}}, {"GET", "/v1/whoami", nil},
		{"GET", "/v1/events/stream", nil}, {"GET", "/v1/orgs/acme/events/stream", nil},
		{"POST", "/v1/orgs/acme/keys", map[string]string{"name": "x"}}, {"GET", "/v1/orgs/acme/keys", nil}, {"GET", key, nil},
		{"POST", key + "/rotate", nil}, {"DELETE", key, nil}, {"GET", key + "/events", nil}, {"GET", "/v1/orgs/acme/events", nil},
		{"GET", key + "/usage", nil}, {"GET", "/v1/orgs/acme/usage", nil},
	} {
		res := cl.do(429, r.method, r.path, admin, r.body)
		if res.errorCode() != "rate_limited" || res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: %s %v, want rate_limited with Retry-After", r.method, r.path, res.body, res.Header)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		cl.do(200, "GET", path, "", nil)
	}
	release()
}

// stalledCreates is the event store under an instance, whose creates of
// keys named "held" wait until released: a write stuck on a slow event
// store, which holds its request slot meanwhile. (A slow body no longer
// can: bodies are read before a slot is taken.)
type stalledCreates struct {
	domain.Store
	entered chan struct{}
	release chan struct{}
}

// stall puts the stall under s's commands; for startWith's configure.
func (st *stalledCreates) stall(s *khttp.Server) {
	keys := *s.Keys
	st.Store, keys.Store = keys.Store, st
	st.entered, st.release = make(chan struct{}, 1), make(chan struct{})
	s.Keys = &keys
}

func (st *stalledCreates) Create(ctx context.Context, e domain.Event) (domain.Event, error) {
	if c, ok := e.Data.(domain.KeyCreated); ok && c.Name == "held" {
		st.entered <- struct{}{}
		<-st.release
	}
	return st.Store.Create(ctx, e)
}

// holdRequestSlot sends a create of a key named "held" on an instance
// started with st.stall: it holds its request slot until release.
func holdRequestSlot(t *testing.T, h *harness, st *stalledCreates, token string) (release func()) {
	t.Helper()
	done := make(chan response, 1)
	go func() {
		res, err := h.srv.Client().Do(newRequest(t, context.Background(), "POST", h.srv.URL+"/v1/orgs/acme/keys", token, map[string]string{"name": "held"}))
		if err != nil {
			done <- response{}
			return
		}
		defer res.Body.Close()
		raw, _ := io.ReadAll(res.Body)
		done <- response{res, raw}
	}()
	select {
	case <-st.entered:
	case res := <-done:
		t.Fatalf("the holding request ended before it reached the store: %v %s", res.Response != nil && res.StatusCode != 0, res.body)
	case <-time.After(10 * time.Second):
		t.Fatal("the holding request did not reach the store within 10s")
	}
	return func() {
		close(st.release)
		if res := <-done; res.Response == nil || res.StatusCode != http.StatusCreated {
			t.Errorf("the holding request: %+v %s, want 201", res.Response, res.body)
		}
	}
}
