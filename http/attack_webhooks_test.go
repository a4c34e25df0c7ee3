package http_test

import (
	"bytes"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// TestAttackWebhooksAnotherOrgsIDsReachNothing: a manager of beta, with
// both scopes, names acme's endpoint under beta's path in every route,
// and acme's attempt under beta's own endpoint: each is 404, and acme's
// endpoint is neither changed nor sent anything. acme's manager is 403
// on beta's routes.
func TestAttackWebhooksAnotherOrgsIDsReachNothing(t *testing.T) {
	h := start(t)
	acme := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	beta := h.bootstrap("beta", domain.ScopeManage, domain.ScopeWebhooks)
	rcA, rcB := newWebhookReceiver(t), newWebhookReceiver(t)
	var a, b issuedWebhook
	h.must(201, "POST", "/v1/orgs/acme/webhooks", acme, map[string]any{"url": rcA.URL + "/a"}).json(t, &a)
	h.must(201, "POST", "/v1/orgs/beta/webhooks", beta, map[string]any{"url": rcB.URL + "/b"}).json(t, &b)
	rcA.setSecret(a.Secret)
	rcB.setSecret(b.Secret)
	h.create("acme", acme, map[string]any{"name": "watched"})
	rcA.waitFor(t, 1)
	var dels struct{ Deliveries []deliveryView }
	h.must(200, "GET", "/v1/orgs/acme/webhooks/"+a.Webhook.ID+"/deliveries", acme, nil).json(t, &dels)
	if len(dels.Deliveries) != 1 {
		t.Fatalf("acme's deliveries: %+v", dels.Deliveries)
	}
	att := dels.Deliveries[0].ID
	var before webhookView
	h.must(200, "GET", "/v1/orgs/acme/webhooks/"+a.Webhook.ID, acme, nil).json(t, &before)

	crossed := "/v1/orgs/beta/webhooks/" + a.Webhook.ID
	for _, op := range []struct {
		method, path string
		body         any
	}{
		{"GET", crossed, nil}, {"PATCH", crossed, map[string]any{"url": rcB.URL + "/stolen"}},
		{"POST", crossed + "/rotate-secret", nil}, {"POST", crossed + "/disable", nil},
		{"POST", crossed + "/enable", nil}, {"POST", crossed + "/replay", map[string]any{"from": "2026-01-01T00:00:00Z"}},
		{"GET", crossed + "/deliveries", nil}, {"POST", crossed + "/deliveries/" + att + "/redeliver", nil},
		{"POST", crossed + "/test", nil}, {"DELETE", crossed, nil},
		{"POST", "/v1/orgs/beta/webhooks/" + b.Webhook.ID + "/deliveries/" + att + "/redeliver", nil},
	} {
		if res := h.request(op.method, op.path, beta, op.body); res.StatusCode != http.StatusNotFound {
			t.Errorf("beta's %s %s: %d %s, want 404", op.method, op.path, res.StatusCode, res.body)
		}
	}
	for _, op := range []struct{ method, path string }{
		{"GET", "/v1/orgs/beta/webhooks"}, {"GET", "/v1/orgs/beta/webhooks/" + b.Webhook.ID},
		{"POST", "/v1/orgs/beta/webhooks/" + b.Webhook.ID + "/test"}, {"DELETE", "/v1/orgs/beta/webhooks/" + b.Webhook.ID},
	} {
		if res := h.request(op.method, op.path, acme, nil); res.StatusCode != http.StatusForbidden {
			t.Errorf("acme's %s %s: %d %s, want 403", op.method, op.path, res.StatusCode, res.body)
		}
	}
	var list struct{ Webhooks []webhookView }
	h.must(200, "GET", "/v1/orgs/beta/webhooks", beta, nil).json(t, &list)
	if len(list.Webhooks) != 1 || list.Webhooks[0].ID != b.Webhook.ID {
		t.Errorf("beta's list: %+v", list.Webhooks)
	}
	var after webhookView
	h.must(200, "GET", "/v1/orgs/acme/webhooks/"+a.Webhook.ID, acme, nil).json(t, &after)
	if after.URL != before.URL || after.Status != "enabled" || after.SecretMasked != before.SecretMasked {
		t.Errorf("acme's endpoint changed: %+v, was %+v", after, before)
	}
	time.Sleep(300 * time.Millisecond)
	if got := rcA.deliveries(); len(got) != 1 {
		t.Errorf("acme's receiver got %d deliveries, want the one", len(got))
	}
	if got := rcB.deliveries(); len(got) != 0 {
		t.Errorf("beta's receiver got acme's event: %+v", got)
	}
}

// TestAttackWebhooksSecretsNeverRestThroughTheAPI: through the API, with
// Idempotency-Keys (whose answers, holding the signing secret, are kept
// in a bucket), a rotation, a test event and a delivery, neither signing
// secret nor the URL's token is in a log line, in the history, the
// deliveries or the metrics, nor in any file of the embedded store.
func TestAttackWebhooksSecretsNeverRestThroughTheAPI(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	rc := newWebhookReceiver(t)
	const token = "T0KENq8Wm3Zr"
	var created, rotated issuedWebhook
	body := map[string]any{"url": rc.URL + "/services/" + token + "?sig=" + token}
	h.must(201, "POST", "/v1/orgs/acme/webhooks", admin, body, "Idempotency-Key", "wh-create").json(t, &created)
	if res := h.must(201, "POST", "/v1/orgs/acme/webhooks", admin, body, "Idempotency-Key", "wh-create"); !bytes.Contains(res.body, []byte(created.Secret)) {
		t.Fatalf("the replayed create: %s", res.body)
	}
	one := "/v1/orgs/acme/webhooks/" + created.Webhook.ID
	h.must(200, "POST", one+"/rotate-secret", admin, map[string]any{"grace_period_seconds": 60}, "Idempotency-Key", "wh-rotate").json(t, &rotated)
	rc.setSecret(rotated.Secret)
	h.must(200, "POST", one+"/test", admin, nil)
	h.create("acme", admin, map[string]any{"name": "delivered"})
	rc.waitFor(t, 2)
	secrets := []string{token, created.Secret, created.Secret[len("whsec_"):], rotated.Secret, rotated.Secret[len("whsec_"):]}
	check := func(where string, b []byte) {
		t.Helper()
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds %q", where, s)
			}
		}
	}
	check("the history", h.must(200, "GET", "/v1/orgs/acme/events?limit=100", admin, nil).body)
	check("the deliveries", h.must(200, "GET", one+"/deliveries", admin, nil).body)
	check("the listing", h.must(200, "GET", "/v1/orgs/acme/webhooks", admin, nil).body)
	check("the metrics", h.must(200, "GET", "/metrics", "", nil).body)
	check("the logs", []byte(h.logs.String()))
	h.stop()
	var files int
	_ = filepath.WalkDir(h.env.Dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(p, "KEYLEDGER_IDEMPOTENCY") || strings.Contains(p, "KEYLEDGER_WEBHOOK_SECRETS") {
			files++
		}
		check(p, raw)
		return nil
	})
	if files == 0 {
		t.Fatal("no file of the idempotency or the secrets bucket: the search proves nothing")
	}
}
