package http_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// webhookReceiver is an endpoint that verifies every delivery with the
// Standard Webhooks Go library (not keyledger's signing code) and keeps
// the envelopes it verified.
type webhookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	secret string
	got    []webhookDelivery
	bad    int
}

type webhookDelivery struct {
	ID   string
	Type string
	Key  string
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	t.Helper()
	rc := &webhookReceiver{}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		defer rc.mu.Unlock()
		wh, err := standardwebhooks.NewWebhook(rc.secret)
		if err == nil {
			err = wh.Verify(body, r.Header)
		}
		if err != nil {
			rc.bad++
			http.Error(w, "bad signature", http.StatusBadRequest)
			return
		}
		var env struct {
			Type  string `json:"type"`
			KeyID string `json:"key_id"`
		}
		_ = json.Unmarshal(body, &env)
		rc.got = append(rc.got, webhookDelivery{ID: r.Header.Get("webhook-id"), Type: env.Type, Key: env.KeyID})
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *webhookReceiver) setSecret(s string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.secret = s
}

func (rc *webhookReceiver) deliveries() []webhookDelivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]webhookDelivery(nil), rc.got...)
}

func (rc *webhookReceiver) waitFor(t *testing.T, n int) []webhookDelivery {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got := rc.deliveries(); len(got) >= n {
			return got
		}
	}
	t.Fatalf("the receiver verified %d deliveries, want %d", len(rc.deliveries()), n)
	return nil
}

type webhookView struct {
	ID, URL, Status, SecretMasked string
	Description                   string
	Version                       uint64
	EventTypes                    []string `json:"event_types"`
	DisabledReason                string   `json:"disabled_reason"`
	PreviousSecretExpiresAt       string   `json:"previous_secret_expires_at"`
}

type issuedWebhook struct {
	Webhook webhookView
	Secret  string
}

type deliveryView struct {
	ID, EventID, EventType, Result string
	Manual                         bool
	ResponseCode                   int `json:"response_code"`
}

// webhookOps are every webhook operation of an endpoint, with a body each
// accepts: what the 401, 403, 429 and 503 passes send.
func webhookOps(id string) []struct {
	method, path string
	body         any
} {
	base := "/v1/orgs/acme/webhooks"
	one := base + "/" + id
	return []struct {
		method, path string
		body         any
	}{
		{"POST", base, map[string]any{"url": "https://hooks.example.com/x"}}, {"GET", base, nil},
		{"GET", one, nil}, {"PATCH", one, map[string]any{"description": "x"}}, {"DELETE", one, nil},
		{"POST", one + "/rotate-secret", nil}, {"POST", one + "/disable", nil}, {"POST", one + "/enable", nil},
		{"POST", one + "/replay", map[string]any{"from": "2026-01-01T00:00:00Z"}}, {"GET", one + "/deliveries", nil},
		{"POST", one + "/deliveries/01JDQ8ZKX3T5V9W2Y4A6B8C0DE/redeliver", nil}, {"POST", one + "/test", nil},
	}
}

// webhooksTour drives every webhook route through the conformance check,
// with a real receiver verifying what they send.
func webhooksTour(t *testing.T, c *conformance) {
	h := start(t)
	cl := c.client(t, h)
	admin := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	plain := h.bootstrap("acme") // keys:manage alone: no webhooks
	rc := newWebhookReceiver(t)
	base := "/v1/orgs/acme/webhooks"

	// Create.
	iw := decodeAs[issuedWebhook](t, cl.do(201, "POST", base, admin, map[string]any{"url": rc.URL + "/hooks/T0KEN", "description": "siem", "event_types": []string{"KeyCreated", "KeyRevoked"}}))
	rc.setSecret(iw.Secret)
	if strings.Contains(iw.Webhook.URL, "T0KEN") || iw.Webhook.Status != "enabled" || len(iw.Webhook.EventTypes) != 2 {
		t.Errorf("created: %+v", iw.Webhook)
	}
	one := base + "/" + iw.Webhook.ID
	cl.broken(400, "POST", base, admin, `{"url": `)
	cl.do(400, "POST", base, admin, map[string]any{"url": "ftp://hooks.example.com/x"})
	cl.do(400, "POST", base, admin, map[string]any{"url": "http://169.254.169.254/latest/meta-data"})
	cl.broken(400, "POST", base, admin, map[string]any{"url": rc.URL, "event_types": []string{"KeyDeleted"}})
	cl.do(413, "POST", base, admin, padded(`{"url": "https://hooks.example.com/x"}`))
	cl.broken(415, "POST", base, admin, "url=x", "Content-Type", "text/plain")
	other := newWebhookReceiver(t) // the second endpoint's: rc counts the first's only
	second := decodeAs[issuedWebhook](t, cl.do(201, "POST", base, admin, map[string]any{"url": other.URL + "/second"}, "Idempotency-Key", "wh-1"))
	other.setSecret(second.Secret)
	cl.do(409, "POST", base, admin, map[string]any{"url": other.URL + "/third"}, "Idempotency-Key", "wh-1")

	// A key event reaches the receiver, verified.
	k := h.create("acme", admin, map[string]any{"name": "watched"})
	if got := rc.waitFor(t, 1); got[0].Type != "KeyCreated" || got[0].Key != k.Key.ID {
		t.Errorf("delivered: %+v", got)
	}

	// Read.
	list := decodeAs[struct{ Webhooks []webhookView }](t, cl.do(200, "GET", base, admin, nil))
	if len(list.Webhooks) != 2 || list.Webhooks[0].ID != iw.Webhook.ID {
		t.Errorf("list: %+v", list.Webhooks)
	}
	cl.do(200, "GET", one, admin, nil)
	cl.broken(400, "GET", base+"/wh_nope", admin, nil)
	cl.broken(400, "GET", "/v1/orgs/Not_An_Org/webhooks", admin, nil)
	unknown := base + "/" + domain.NewWebhookID()
	cl.do(404, "GET", unknown, admin, nil)

	// Update.
	up := decodeAs[webhookView](t, cl.do(200, "PATCH", one, admin, map[string]any{"event_types": []string{}}))
	if len(up.EventTypes) != 4 {
		t.Errorf("updated to all types: %+v", up)
	}
	cl.do(400, "PATCH", one, admin, map[string]any{"url": "ftp://x.example/y"})
	cl.broken(400, "PATCH", one, admin, map[string]any{})
	cl.do(404, "PATCH", unknown, admin, map[string]any{"description": "x"})
	cl.do(413, "PATCH", one, admin, padded(`{"description": "x"}`))
	cl.broken(415, "PATCH", one, admin, "description=x", "Content-Type", "text/plain")
	cl.do(200, "PATCH", one, admin, map[string]any{"description": "a"}, "Idempotency-Key", "wh-2")
	cl.do(409, "PATCH", one, admin, map[string]any{"description": "b"}, "Idempotency-Key", "wh-2")
	// If-Match: an edit made against a version since changed is refused,
	// not laid over the other manager's.
	cur := decodeAs[webhookView](t, cl.do(200, "GET", one, admin, nil))
	cl.do(412, "PATCH", one, admin, map[string]any{"description": "stale"}, "If-Match", fmt.Sprintf(`"%d"`, up.Version))
	cl.do(400, "PATCH", one, admin, map[string]any{"description": "x"}, "If-Match", "v1")
	if now := decodeAs[webhookView](t, cl.do(200, "GET", one, admin, nil)); now.Version != cur.Version || now.Description != "a" {
		t.Errorf("a refused If-Match changed the endpoint: %+v", now)
	}
	cl.do(200, "PATCH", one, admin, map[string]any{"description": "siem"}, "If-Match", fmt.Sprintf(`"%d"`, cur.Version))

	// Rotate the secret: during the grace a receiver holding either verifies.
	old := iw.Secret
	rot := decodeAs[issuedWebhook](t, cl.do(200, "POST", one+"/rotate-secret", admin, map[string]any{"grace_period_seconds": 3600}))
	if rot.Secret == old || rot.Webhook.PreviousSecretExpiresAt == "" {
		t.Errorf("rotated: %+v", rot.Webhook)
	}
	h.create("acme", admin, map[string]any{"name": "after the rotation"})
	rc.waitFor(t, 2) // verified with the old secret
	rc.setSecret(rot.Secret)
	cl.broken(400, "POST", one+"/rotate-secret", admin, map[string]any{"grace_period_seconds": -1})
	cl.do(404, "POST", unknown+"/rotate-secret", admin, nil)
	cl.do(413, "POST", one+"/rotate-secret", admin, padded(`{}`))
	cl.broken(415, "POST", one+"/rotate-secret", admin, "x", "Content-Type", "text/plain")
	cl.do(200, "POST", one+"/rotate-secret", admin, map[string]any{"grace_period_seconds": 60}, "Idempotency-Key", "wh-3")
	cl.do(409, "POST", one+"/rotate-secret", admin, map[string]any{"grace_period_seconds": 61}, "Idempotency-Key", "wh-3")
	rot = decodeAs[issuedWebhook](t, cl.do(200, "POST", one+"/rotate-secret", admin, map[string]any{"grace_period_seconds": 0}))
	rc.setSecret(rot.Secret)

	// Test, deliveries, redeliver: verified with the newest secret.
	test := decodeAs[deliveryView](t, cl.do(200, "POST", one+"/test", admin, nil))
	if test.Result != "succeeded" || !test.Manual || test.ResponseCode != 204 {
		t.Errorf("test: %+v", test)
	}
	if got := rc.waitFor(t, 3); got[2].Type != "WebhookTest" {
		t.Errorf("test delivery: %+v", got[2])
	}
	cl.broken(400, "POST", base+"/wh_nope/test", admin, nil)
	cl.do(404, "POST", unknown+"/test", admin, nil)
	dels := decodeAs[struct{ Deliveries []deliveryView }](t, cl.do(200, "GET", one+"/deliveries", admin, nil))
	if len(dels.Deliveries) != 3 || dels.Deliveries[0].ID != test.ID {
		t.Errorf("deliveries: %+v", dels.Deliveries)
	}
	cl.broken(400, "GET", one+"/deliveries?limit=0", admin, nil)
	cl.do(404, "GET", unknown+"/deliveries", admin, nil)
	first := dels.Deliveries[len(dels.Deliveries)-1]
	again := decodeAs[deliveryView](t, cl.do(200, "POST", one+"/deliveries/"+first.ID+"/redeliver", admin, nil))
	if again.EventID != first.EventID || again.Result != "succeeded" {
		t.Errorf("redelivered: %+v, of %+v", again, first)
	}
	if got := rc.waitFor(t, 4); got[3].ID != got[0].ID {
		t.Errorf("redelivered %s, want %s", got[3].ID, got[0].ID)
	}
	cl.do(400, "POST", one+"/deliveries/not-an-attempt/redeliver", admin, nil)
	cl.do(404, "POST", one+"/deliveries/"+test.ID+"/redeliver", admin, nil) // a test is not in the history

	// Disable, enable, replay.
	dis := decodeAs[webhookView](t, cl.do(200, "POST", one+"/disable", admin, map[string]any{"reason": "maintenance"}))
	if dis.Status != "disabled" || dis.DisabledReason != "maintenance" {
		t.Errorf("disabled: %+v", dis)
	}
	cl.do(400, "POST", one+"/disable", admin, map[string]any{"reason": strings.Repeat("r", 300)})
	cl.do(404, "POST", unknown+"/disable", admin, nil)
	cl.do(413, "POST", one+"/disable", admin, padded(`{}`))
	cl.broken(415, "POST", one+"/disable", admin, "x", "Content-Type", "text/plain")
	cl.do(200, "POST", one+"/disable", admin, map[string]any{"reason": "a"}, "Idempotency-Key", "wh-4")
	cl.do(409, "POST", one+"/disable", admin, map[string]any{"reason": "b"}, "Idempotency-Key", "wh-4")
	if en := decodeAs[webhookView](t, cl.do(200, "POST", one+"/enable", admin, nil)); en.Status != "enabled" {
		t.Errorf("enabled: %+v", en)
	}
	cl.broken(400, "POST", one+"/enable", admin, map[string]any{"x": 1})
	cl.do(404, "POST", unknown+"/enable", admin, nil)
	cl.do(413, "POST", one+"/enable", admin, padded(`{}`))
	cl.broken(415, "POST", one+"/enable", admin, "x", "Content-Type", "text/plain")
	cl.do(200, "POST", one+"/enable", admin, nil, "Idempotency-Key", "wh-5")
	cl.do(409, "POST", one+"/enable", admin, map[string]any{}, "Idempotency-Key", "wh-5")
	cl.do(202, "POST", one+"/replay", admin, map[string]any{"from": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)})
	if got := rc.waitFor(t, 6); got[4].ID != got[0].ID || got[5].ID != got[1].ID {
		t.Errorf("replayed: %+v", got)
	}
	cl.do(400, "POST", one+"/replay", admin, map[string]any{"from": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	cl.do(404, "POST", unknown+"/replay", admin, map[string]any{"from": "2026-01-01T00:00:00Z"})
	cl.do(413, "POST", one+"/replay", admin, padded(`{"from": "2026-01-01T00:00:00Z"}`))
	cl.broken(415, "POST", one+"/replay", admin, "x", "Content-Type", "text/plain")
	cl.do(202, "POST", one+"/replay", admin, map[string]any{"from": "2026-01-01T00:00:00Z"}, "Idempotency-Key", "wh-6")
	cl.do(409, "POST", one+"/replay", admin, map[string]any{"from": "2026-01-02T00:00:00Z"}, "Idempotency-Key", "wh-6")

	// Who may: no credential, and a management key without webhooks:manage.
	for _, op := range webhookOps(iw.Webhook.ID) {
		cl.broken(401, op.method, op.path, "", op.body)
		if res := cl.do(403, op.method, op.path, plain, op.body); !strings.Contains(string(res.body), domain.ScopeWebhooks) {
			t.Errorf("%s %s: 403 without naming the scope: %s", op.method, op.path, res.body)
		}
	}

	// Delete.
	cl.do(204, "DELETE", one, admin, nil)
	cl.do(404, "DELETE", one, admin, nil)
	cl.do(404, "GET", one, admin, nil)
	cl.broken(400, "DELETE", base+"/wh_nope", admin, nil)

	webhooksLimitsTour(t, c)
}

// webhooksLimitsTour: an address that spent its failed authentications
// gets 429 on every webhook route, and an instance with its one request
// slot taken 503.
func webhooksLimitsTour(t *testing.T, c *conformance) {
	limited := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.AuthFailureLimit = khttp.Limit{Per: 1, Every: time.Hour, Burst: 1}
	})
	lc := c.client(t, limited)
	admin := limited.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	lc.do(401, "GET", "/v1/whoami", "not-a-key", nil)
	id := domain.NewWebhookID()
	for _, op := range webhookOps(id) {
		if res := lc.do(429, op.method, op.path, admin, op.body); res.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 429 without Retry-After", op.method, op.path)
		}
	}

	var st stalledCreates
	full := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.MaxInFlight = 1
		st.stall(s)
	})
	fc := c.client(t, full)
	fadmin := full.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	release := holdRequestSlot(t, full, &st, fadmin)
	for _, op := range webhookOps(id) {
		mustHeader(t, fc.do(503, op.method, op.path, fadmin, op.body), "Retry-After", "1")
	}
	release()
}
