package http_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestManagerSignsInOnThePage drives the sign-in in headless Chromium
// against zitadel/oidc's example OpenID Provider (see sso_test.go): a
// manager clicks "Sign in", logs in on the provider's own page, lands on
// the table, creates a key and sees the one-time dialog, and signs out;
// a member who is not a manager sees the manager-only message. The page
// offers the provider first, and a pasted management key only behind it.
// No token reaches the page's storage.
func TestManagerSignsInOnThePage(t *testing.T) {
	p := startProvider(t)
	h, sso, admin := startSSO(t, p, t.TempDir())
	for _, name := range []string{"billing worker (production)", "nightly export"} {
		h.create("acme", admin, map[string]any{"name": name})
	}
	b := newBrowser(t, 1280, 800)
	page := h.srv.URL + "/acme/configuration/api-keys"
	out := os.Getenv("KEYLEDGER_SCREENSHOTS") // docs/ screenshots: KEYLEDGER_SCREENSHOTS=$PWD/docs
	if out == "" {
		out = t.TempDir()
	}
	shot := func(b *browser, name string) {
		t.Helper()
		png := run(t, b, chromedp.CaptureScreenshot())
		if err := os.WriteFile(filepath.Join(out, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	b.do(t, chromedp.Navigate(page), chromedp.WaitVisible("#sso-link"))
	shot(b, "sso-sign-in.png")
	if visible := run(t, b, chromedp.Evaluate[bool](`!document.getElementById("signin-form").hidden`)); visible {
		t.Error("with sign-in configured, the page offers the pasted key first")
	}
	b.click(t, "#sso-link")
	b.do(t,
		chromedp.WaitVisible("#username"),
		chromedp.SendKeys("#username", "test-user@127.0.0.1"),
		chromedp.SendKeys("#password", "verysecure"),
		chromedp.Click("button[type=submit]"),
		chromedp.WaitVisible("#keys"),
	)
	b.do(t, chromedp.WaitVisible(`//td[text()="nightly export"]`))
	shot(b, "sso-signed-in.png")
	if url := run(t, b, chromedp.Location()); url != page {
		t.Errorf("after signing in the browser is at %s, want %s", url, page)
	}
	who := run(t, b, chromedp.Text("#who"))
	if !strings.Contains(who, "Test User") || !strings.Contains(who, "test-user@zitadel.ch") {
		t.Errorf("signed in as %q, want the person's name and email", who)
	}
	orgs := run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#org-switch option")].map(o => o.value)`))
	if strings.Join(orgs, ",") != "acme" {
		t.Errorf("orgs to switch between: %v, want the one managed", orgs)
	}

	b.click(t, "#create")
	b.do(t,
		chromedp.WaitVisible("#create-dialog"),
		chromedp.SendKeys("#key-name", "made after SSO"),
		chromedp.Click("#create-form button[type=submit]"),
		chromedp.WaitVisible("#secret-dialog"),
	)
	secret := run(t, b, chromedp.Value("#secret-value"))
	if !h.verify(secret).Valid {
		t.Fatalf("the key shown once does not verify: %q", secret)
	}
	storage := run(t, b, chromedp.Evaluate[string](`JSON.stringify(sessionStorage) + JSON.stringify(localStorage) + document.cookie`))
	if storage != "{}{}" {
		t.Errorf("the page's storage holds %s; the session lives in an HttpOnly cookie only", storage)
	}
	b.do(t, chromedp.Click("#secret-dialog button[type=submit]"), chromedp.WaitNotVisible("#secret-dialog"))

	// A page on another origin of the same site (the provider's, another
	// port of 127.0.0.1: the SameSite cookie goes along) posts a create
	// with the session: refused, nothing appended.
	before := h.env.LastSeq(t)
	b.do(t, chromedp.Navigate(p.srv.URL+"/logged-out"))
	status := run(t, b, chromedp.Evaluate[string](`fetch("`+h.srv.URL+`/v1/orgs/acme/keys", {method: "POST", credentials: "include", mode: "no-cors",
		headers: {"Content-Type": "text/plain"}, body: '{"name":"forged from elsewhere"}'}).then(r => r.type, e => "refused: " + e)`, chromedp.EvalAwaitPromise))
	time.Sleep(200 * time.Millisecond)
	if after := h.env.LastSeq(t); after != before {
		t.Errorf("a cross-origin POST with the session cookie (%s) appended events %d..%d", status, before+1, after)
	}
	b.do(t, chromedp.Navigate(page), chromedp.WaitVisible("#keys"))

	// Sign out: the provider's sign-out, then the sign-in again.
	b.click(t, "#sign-out")
	deadline := time.Now().Add(10 * time.Second)
	for {
		url := run(t, b, chromedp.Location())
		if strings.HasPrefix(url, h.srv.URL) && !strings.Contains(url, "api-keys") || strings.HasPrefix(url, p.srv.URL) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sign-out did not leave the page: at %s", url)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.do(t, chromedp.Navigate(page), chromedp.WaitVisible("#sso-link"))

	// A stale session: signed in again, then past the ID token's expiry
	// (no refresh token): the page asks to sign in.
	b.click(t, "#sso-link")
	b.do(t, chromedp.WaitVisible("#username"), chromedp.SendKeys("#username", "test-user@127.0.0.1"),
		chromedp.SendKeys("#password", "verysecure"), chromedp.Click("button[type=submit]"), chromedp.WaitVisible("#keys"))
	sso.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	b.do(t, chromedp.Reload(), chromedp.WaitVisible("#sso-link"))
	sso.Now = nil

	// A member who is not a manager.
	m := newBrowser(t, 1280, 900)
	m.do(t, chromedp.Navigate(page), chromedp.WaitVisible("#sso-link"))
	m.click(t, "#sso-link")
	m.do(t,
		chromedp.WaitVisible("#username"),
		chromedp.SendKeys("#username", "test-user2"),
		chromedp.SendKeys("#password", "verysecure"),
		chromedp.Click("button[type=submit]"),
		chromedp.WaitVisible("#forbidden"),
	)
	shot(m, "sso-member-not-manager.png")
	msg := run(t, m, chromedp.Text("#forbidden"))
	if !strings.Contains(msg, "Ask an org manager to grant you access in Users & Permissions") || !strings.Contains(msg, "member of acme, not a manager") {
		t.Errorf("a member sees %q", msg)
	}
}
