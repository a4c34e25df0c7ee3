package http_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// pageWebhook is an endpoint as GET /v1/orgs/{org}/webhooks/{id} answers.
type pageWebhook struct {
	ID             string   `json:"id"`
	URL            string   `json:"url"`
	Description    string   `json:"description"`
	EventTypes     []string `json:"event_types"`
	Status         string   `json:"status"`
	DisabledReason string   `json:"disabled_reason"`
	SecretMasked   string   `json:"secret_masked"`
}

func (h *harness) webhooks(org, token string) []pageWebhook {
	h.t.Helper()
	var out struct{ Webhooks []pageWebhook }
	h.must(200, "GET", "/v1/orgs/"+org+"/webhooks", token, nil).json(h.t, &out)
	return out.Webhooks
}

func (h *harness) webhook(org, id, token string) pageWebhook {
	h.t.Helper()
	var out pageWebhook
	h.must(200, "GET", "/v1/orgs/"+org+"/webhooks/"+id, token, nil).json(h.t, &out)
	return out
}

// waitDelivery clicks the deliveries panel's Refresh until a row matching
// sel is there: a delivery follows its event by a moment.
func (b *browser) waitDelivery(t *testing.T, sel string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if n := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll(`+"`"+sel+"`"+`).length`)); n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the deliveries panel shows no %s", sel)
		}
		b.click(t, "#wh-deliveries-refresh")
	}
}

// TestWebhooksPage drives the Webhooks section in headless Chromium over
// the real routes, with a real receiver that verifies every delivery with
// the Standard Webhooks library and the secret the page showed once.
func TestWebhooksPage(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	rc := newWebhookReceiver(t)
	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible("#keys"), chromedp.WaitVisible("#wh-empty"))

	t.Run("ABadURLShowsTheAPIErrorAndCreatesNothing", func(t *testing.T) {
		b.do(t,
			chromedp.Click("#wh-add"),
			chromedp.WaitVisible("#wh-create-dialog"),
			chromedp.SendKeys("#wh-url", "ftp://hooks.example.com/x"),
			chromedp.Click("#wh-create-form button[type=submit]"),
			chromedp.WaitVisible("#wh-create-error"),
		)
		if msg := run(t, b, chromedp.Text("#wh-create-error")); !strings.Contains(msg, "url must be https") {
			t.Errorf("the form says %q, want the API's 400 message", msg)
		}
		if got := h.webhooks("acme", admin); len(got) != 0 {
			t.Errorf("a refused URL made endpoints: %+v", got)
		}
		b.do(t, chromedp.Click("#wh-create-dialog .cancel"), chromedp.WaitNotVisible("#wh-create-dialog"))
	})

	var id, secret string
	t.Run("AddShowsTheSecretOnceAndTheReceiverVerifiesDeliveries", func(t *testing.T) {
		b.do(t,
			chromedp.Click("#wh-add"),
			chromedp.WaitVisible("#wh-create-dialog"),
			chromedp.SendKeys("#wh-url", rc.URL+"/hooks/T0KEN"),
			chromedp.SendKeys("#wh-description", `siem <img src=x onerror=alert(1)>`),
			chromedp.Click(`#wh-create-form input[value="KeyCreated"]`),
			chromedp.Click(`#wh-create-form input[value="KeyRevoked"]`),
			chromedp.Click("#wh-create-form button[type=submit]"),
			chromedp.WaitVisible("#wh-secret-dialog"),
		)
		secret = run(t, b, chromedp.Value("#wh-secret-value"))
		if !strings.HasPrefix(secret, "whsec_") {
			t.Fatalf("the dialog shows %q, not a signing secret", secret)
		}
		rc.setSecret(secret)
		if warning := run(t, b, chromedp.Text("#wh-secret-warning")); !strings.Contains(warning, "You will not see it again") {
			t.Errorf("warning = %q", warning)
		}
		b.do(t,
			chromedp.Evaluate[chromedp.Void](`navigator.clipboard.writeText = async (v) => { window.copied = v; }`),
			chromedp.Click("#wh-copy"),
			chromedp.WaitVisible(`//p[@id="wh-copy-status"][contains(text(),"Copied")]`),
		)
		if copied := run(t, b, chromedp.Evaluate[string](`window.copied`)); copied != secret {
			t.Errorf("copied %q, want the secret", copied)
		}
		b.do(t,
			chromedp.Click("#wh-secret-dialog button[type=submit]"),
			chromedp.WaitNotVisible("#wh-secret-dialog"),
			chromedp.WaitVisible("#wh-rows tr"),
		)
		list := h.webhooks("acme", admin)
		if len(list) != 1 || strings.Join(list[0].EventTypes, ",") != "KeyCreated,KeyRevoked" || !strings.HasPrefix(list[0].Description, "siem") {
			t.Fatalf("endpoints after the add: %+v", list)
		}
		id = list[0].ID
		row := `#wh-rows tr[data-webhook-id="` + id + `"]`
		text := run(t, b, chromedp.Text(row))
		if !strings.Contains(text, list[0].URL) || !strings.Contains(text, list[0].SecretMasked) || !strings.Contains(text, "enabled") || !strings.Contains(text, "KeyCreated, KeyRevoked") {
			t.Errorf("the row shows %q, want the masked URL %s, the masked secret %s, the status and the event types", text, list[0].URL, list[0].SecretMasked)
		}
		dom := b.dom(t)
		if strings.Contains(dom, secret) || strings.Contains(dom, secret[6:20]) || strings.Contains(dom, "T0KEN") {
			t.Error("after the dialog closed, the page still holds the secret or the URL's token")
		}
		if n := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll("#webhooks img").length`)); n != 0 {
			t.Errorf("%d img elements were made from a description", n)
		}

		// A key created on the page reaches the receiver, signed with the
		// secret shown, and the page lists the delivery.
		b.do(t,
			chromedp.Click("#create"),
			chromedp.WaitVisible("#create-dialog"),
			chromedp.SendKeys("#key-name", "watched"),
			chromedp.Click("#create-form button[type=submit]"),
			chromedp.WaitVisible("#secret-dialog"),
			chromedp.Click("#secret-dialog button[type=submit]"),
			chromedp.WaitNotVisible("#secret-dialog"),
		)
		var key string
		for _, k := range h.list("acme", admin, "") {
			if k.Name == "watched" {
				key = k.ID
			}
		}
		if got := rc.waitFor(t, 1); got[0].Type != "KeyCreated" || got[0].Key != key {
			t.Errorf("the receiver verified %+v, want the KeyCreated of %s", got, key)
		}
		b.click(t, row+" button.wh-deliveries")
		b.do(t, chromedp.WaitVisible("#wh-deliveries"))
		b.waitDelivery(t, `#wh-deliveries-rows tr[data-event-type="KeyCreated"][data-result="succeeded"]`)
		if code := run(t, b, chromedp.Text(`#wh-deliveries-rows tr[data-event-type="KeyCreated"] td.code`)); code != "204" {
			t.Errorf("the delivery's response code shows %q, want 204", code)
		}
	})
	if id == "" {
		t.FailNow()
	}
	row := `#wh-rows tr[data-webhook-id="` + id + `"]`

	t.Run("SendTestReachesTheReceiverAndShowsSuccess", func(t *testing.T) {
		b.click(t, row+" button.wh-test")
		b.do(t, chromedp.WaitVisible("#wh-status.ok"))
		if note := run(t, b, chromedp.Text("#wh-status")); !strings.Contains(note, "succeeded (HTTP 204)") {
			t.Errorf("after the test the page says %q", note)
		}
		if got := rc.waitFor(t, 2); got[1].Type != "WebhookTest" {
			t.Errorf("the receiver verified %+v, want a WebhookTest second", got)
		}
		b.waitDelivery(t, `#wh-deliveries-rows tr[data-event-type="WebhookTest"][data-result="succeeded"]`)
		if out := os.Getenv("KEYLEDGER_SCREENSHOTS"); out != "" {
			png := run(t, b, chromedp.FullScreenshot(100))
			if err := os.WriteFile(filepath.Join(out, "api-keys-webhooks.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("FitsA375PxScreen", func(t *testing.T) {
		m := newBrowser(t, 375, 812)
		m.signIn(t, h, "acme", admin)
		m.do(t, chromedp.WaitVisible(row))
		m.click(t, row+" button.wh-deliveries")
		m.waitDelivery(t, `#wh-deliveries-rows tr[data-event-type="WebhookTest"]`)
		if w := run(t, m, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 375 {
			t.Errorf("the page is %d px wide in a 375 px window", w)
		}
		if out := os.Getenv("KEYLEDGER_SCREENSHOTS"); out != "" {
			png := run(t, m, chromedp.FullScreenshot(100))
			if err := os.WriteFile(filepath.Join(out, "api-keys-webhooks-375px.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("DisableAndEnable", func(t *testing.T) {
		b.click(t, row+" button.wh-disable")
		b.do(t,
			chromedp.WaitVisible("#wh-disable-dialog"),
			chromedp.SendKeys("#wh-disable-reason", "receiver under maintenance"),
			chromedp.Click("#wh-disable-form button[type=submit]"),
			chromedp.WaitVisible(row+" .status.disabled"),
		)
		if why := run(t, b, chromedp.Text(row+" .why")); !strings.Contains(why, "receiver under maintenance") {
			t.Errorf("the disabled row says %q, want the reason", why)
		}
		if got := h.webhook("acme", id, admin); got.Status != "disabled" || got.DisabledReason != "receiver under maintenance" {
			t.Errorf("after disabling on the page: %+v", got)
		}
		b.click(t, row+" button.wh-enable")
		b.do(t, chromedp.WaitVisible(row+" .status.enabled"))
		if got := h.webhook("acme", id, admin); got.Status != "enabled" {
			t.Errorf("after enabling on the page: %+v", got)
		}
	})

	t.Run("RotateShowsTheNewSecretOnce", func(t *testing.T) {
		b.click(t, row+" button.wh-rotate")
		b.do(t,
			chromedp.WaitVisible("#wh-rotate-dialog"),
			chromedp.Click(`#wh-rotate-form input[value="0"]`),
			chromedp.Click("#wh-rotate-form button[type=submit]"),
			chromedp.WaitVisible("#wh-secret-dialog"),
		)
		fresh := run(t, b, chromedp.Value("#wh-secret-value"))
		if fresh == secret || !strings.HasPrefix(fresh, "whsec_") {
			t.Fatalf("the rotation showed %q", fresh)
		}
		if note := run(t, b, chromedp.Text("#wh-secret-grace")); !strings.Contains(note, "stopped signing at once") {
			t.Errorf("the grace note says %q", note)
		}
		rc.setSecret(fresh) // the old one no longer signs: only the new one verifies
		b.do(t, chromedp.Click("#wh-secret-dialog button[type=submit]"), chromedp.WaitNotVisible("#wh-secret-dialog"))
		b.click(t, row+" button.wh-test")
		b.do(t, chromedp.WaitVisible(`//p[@id="wh-status"][contains(text(),"succeeded (HTTP 204)")]`))
		if got := rc.waitFor(t, 3); got[2].Type != "WebhookTest" {
			t.Errorf("after the rotation the receiver verified %+v", got)
		}
		dom := b.dom(t)
		if strings.Contains(dom, fresh) || strings.Contains(dom, fresh[6:20]) {
			t.Error("the page still holds the rotated secret")
		}
		secret = fresh
	})

	t.Run("NoSecretAfterReload", func(t *testing.T) {
		b.do(t, chromedp.Reload(), chromedp.WaitVisible(row))
		if dom := b.dom(t); strings.Contains(dom, secret) || strings.Contains(dom, "T0KEN") {
			t.Error("after a reload the page holds the secret or the URL's token")
		}
	})

	t.Run("DeleteAsksFirstAndRemovesIt", func(t *testing.T) {
		b.click(t, row+" button.wh-delete")
		b.do(t, chromedp.WaitVisible("#wh-delete-dialog"))
		if body := run(t, b, chromedp.Text("#wh-delete-dialog")); !strings.Contains(body, h.webhook("acme", id, admin).URL) || !strings.Contains(body, "cannot be undone") {
			t.Errorf("confirmation = %q", body)
		}
		b.do(t, chromedp.Click("#wh-delete-dialog .cancel"), chromedp.WaitNotVisible("#wh-delete-dialog"))
		h.webhook("acme", id, admin) // still there
		b.click(t, row+" button.wh-delete")
		b.do(t,
			chromedp.WaitVisible("#wh-delete-dialog"),
			chromedp.Click("#wh-delete-form button[type=submit]"),
			chromedp.WaitNotPresent(row),
			chromedp.WaitVisible("#wh-empty"),
		)
		h.must(404, "GET", "/v1/orgs/acme/webhooks/"+id, admin, nil)
	})

	t.Run("TheSlotLimitShowsTheConflict", func(t *testing.T) {
		other := newWebhookReceiver(t)
		for range domain.MaxWebhooksPerOrg {
			h.must(201, "POST", "/v1/orgs/acme/webhooks", admin, map[string]any{"url": other.URL + "/full"})
		}
		b.do(t,
			chromedp.Click("#wh-add"),
			chromedp.WaitVisible("#wh-create-dialog"),
			chromedp.SendKeys("#wh-url", other.URL+"/one-too-many"),
			chromedp.Click("#wh-create-form button[type=submit]"),
			chromedp.WaitVisible("#wh-create-error"),
		)
		if msg := run(t, b, chromedp.Text("#wh-create-error")); !strings.Contains(msg, "the most it may") {
			t.Errorf("the form says %q, want the API's 409 message", msg)
		}
		if n := len(h.webhooks("acme", admin)); n != domain.MaxWebhooksPerOrg {
			t.Errorf("%d endpoints, want %d", n, domain.MaxWebhooksPerOrg)
		}
		b.do(t, chromedp.Click("#wh-create-dialog .cancel"))
	})

	time.Sleep(200 * time.Millisecond)
	if b.alerts.Load() != 0 {
		t.Error("the page opened a JavaScript dialog, or a description ran script")
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.bad != 0 {
		t.Errorf("the receiver refused %d deliveries it could not verify", rc.bad)
	}
}

// TestWebhooksPageSaysWhoMayNot: a management key without
// webhooks:manage sees why inside the section, and the keys as usual.
func TestWebhooksPageSaysWhoMayNot(t *testing.T) {
	h := start(t)
	plain := h.bootstrap("acme")
	h.create("acme", plain, map[string]any{"name": "billing worker"})
	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", plain)
	b.do(t, chromedp.WaitVisible(`//td[text()="billing worker"]`), chromedp.WaitVisible("#wh-forbidden"))
	if msg := run(t, b, chromedp.Text("#wh-forbidden")); !strings.Contains(msg, domain.ScopeWebhooks) {
		t.Errorf("the section says %q, want the scope it needs", msg)
	}
	visible := run(t, b, chromedp.Evaluate[[]bool](`["keys", "forbidden", "wh-add", "wh-table"].map(id => !document.getElementById(id).hidden)`))
	if want := []bool{true, false, false, false}; !slices.Equal(visible, want) {
		t.Errorf("visible keys, manager-only message, add button, endpoints: %v, want %v", visible, want)
	}
}

// TestWebhooksPageHiddenWhenOff: a service without webhooks answers their
// routes 404, and the page shows no Webhooks section.
func TestWebhooksPageHiddenWhenOff(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.Webhooks = nil })
	admin := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible("#keys"), chromedp.WaitReady(`#webhooks[data-state="off"]`))
	if visible := run(t, b, chromedp.Evaluate[bool](`!document.getElementById("webhooks").hidden`)); visible {
		t.Error("the Webhooks section shows on a service without webhooks")
	}
}
