package http_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestPageMarksALeakedKey: a key revoked because its secret was reported
// leaked shows so on the page, with the URL where it was found as a link
// that opens nothing of the page (rel=noopener noreferrer); a URL that is
// not http(s) is shown as text only.
func TestPageMarksALeakedKey(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "billing worker (production)"})
	odd := h.create("acme", admin, map[string]any{"name": "odd"})
	h.create("acme", admin, map[string]any{"name": "nightly export"})
	url := "https://github.com/octo/app/blob/abc123/.env"
	h.must(200, "POST", "/v1/leaks", admin, map[string]string{"token": k.Secret, "url": url, "source": "content"})
	h.must(200, "POST", "/v1/leaks", admin, map[string]string{"token": odd.Secret, "url": "javascript:alert(1)"})

	b := newBrowser(t, 1280, 800)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible("#keys"), chromedp.Click("#show-revoked"), chromedp.WaitVisible(`//td[text()="billing worker (production)"]`))
	note := run(t, b, chromedp.Text(`tr[data-key-id="`+k.Key.ID+`"] .leak`))
	if !strings.Contains(note, "Revoked: leaked") || !strings.Contains(note, url) {
		t.Errorf("the leaked key's note: %q", note)
	}
	link := run(t, b, chromedp.Evaluate[[]string](`(() => { const a = document.querySelector('tr[data-key-id="`+k.Key.ID+`"] .leak a'); return a ? [a.href, a.rel, a.target] : [] })()`))
	if len(link) != 3 || link[0] != url || link[1] != "noopener noreferrer" {
		t.Errorf("the link to where it was found: %v", link)
	}
	if n := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll('tr[data-key-id="`+odd.Key.ID+`"] .leak a').length`)); n != 0 {
		t.Errorf("a javascript: URL became a link")
	}
	if out := os.Getenv("KEYLEDGER_SCREENSHOTS"); out != "" {
		png := run(t, b, chromedp.CaptureScreenshot())
		if err := os.WriteFile(filepath.Join(out, "api-keys-leaked.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
