package http_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/keyledger/keyledger/domain"
)

// chromium finds Debian's Chromium: the page tests skip without it, except
// under CI=true, where .ci/run must have installed it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("Chromium is missing under CI=true: .ci/run must install it (apt-get install chromium)")
	}
	t.Skip("Chromium is not installed, so the manager page is not tested in a browser: apt-get install chromium")
	return ""
}

// browser is a headless Chromium tab; alerts is how many JavaScript dialogs
// (alert, confirm, prompt) the page opened.
type browser struct {
	ctx    context.Context
	alerts *atomic.Int32
}

func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{ctx: ctx, alerts: &atomic.Int32{}}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(int64(width), int64(height))); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	go func() {
		for ev, err := range chromedp.Events(ctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			_ = ev
			b.alerts.Add(1)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	return b
}

// do runs steps with a time limit.
func (b *browser) do(t *testing.T, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("browser: %v", err)
	}
}

func run[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	return v
}

// click clicks sel, again if the table was re-rendered under it (the page
// follows changes live, so a row can be replaced between find and click).
func (b *browser) click(t *testing.T, sel string) {
	t.Helper()
	var err error
	for range 20 {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		err = chromedp.Do(ctx, chromedp.Click(sel))
		cancel()
		if err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("click %s: %v", sel, err)
}

// signIn opens the org's page and signs in with credential.
func (b *browser) signIn(t *testing.T, h *harness, org, credential string) {
	t.Helper()
	b.do(t,
		chromedp.Navigate(h.srv.URL+"/"+org+"/configuration/api-keys"),
		chromedp.WaitVisible("#signin"),
		chromedp.SendKeys("#credential", credential),
		chromedp.Click("#signin-form button[type=submit]"),
	)
}

// dom is everything the page holds: its markup and every field's value.
func (b *browser) dom(t *testing.T) string {
	t.Helper()
	html := run(t, b, chromedp.OuterHTML("html"))
	values := run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input, textarea")].map(e => e.value)`))
	return html + strings.Join(values, "\n")
}

func TestManagerPage(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible("#keys"))

	var secret, masked string
	t.Run("CreateShowsTheKeyOnceAndThenOnlyMasked", func(t *testing.T) {
		b.do(t,
			chromedp.Click("#create"),
			chromedp.WaitVisible("#create-dialog"),
			chromedp.SendKeys("#key-name", "billing worker"),
			chromedp.Click("#create-form button[type=submit]"),
			chromedp.WaitVisible("#secret-dialog"),
		)
		secret = run(t, b, chromedp.Value("#secret-value"))
		if !domain.WellFormed(secret) {
			t.Fatalf("the dialog shows %q, not a key", secret)
		}
		warning := run(t, b, chromedp.Text("#secret-warning"))
		if !strings.Contains(warning, "will not be shown again") {
			t.Errorf("warning = %q", warning)
		}
		// The copy button hands the value to the clipboard API.
		b.do(t,
			chromedp.Evaluate[chromedp.Void](`navigator.clipboard.writeText = async (v) => { window.copied = v; }`),
			chromedp.Click("#copy"),
			chromedp.WaitVisible("#copy-status"),
		)
		copied := run(t, b, chromedp.Evaluate[string](`window.copied`))
		if got := h.verify(copied); got.Code != "VALID" {
			t.Errorf("the copied value verifies %s, want VALID", got.Code)
		}
		b.do(t,
			chromedp.Click("#secret-dialog button[type=submit]"),
			chromedp.WaitNotVisible("#secret-dialog"),
			chromedp.WaitVisible(`//td[contains(@class,"name")][text()="billing worker"]`),
		)
		masked = "c8k_****" + secret[len(secret)-4:]
		dom := b.dom(t)
		if strings.Contains(dom, secret) || strings.Contains(dom, secret[4:20]) {
			t.Error("after the dialog closed, the page still holds the full key")
		}
		if !strings.Contains(dom, masked) {
			t.Errorf("the page does not show the masked form %s", masked)
		}
	})

	t.Run("RotateShowsTheNewKeyOnce", func(t *testing.T) {
		b.click(t, `//tr[td[text()="billing worker"]]//button[contains(@class,"rotate")]`)
		b.do(t,
			chromedp.WaitVisible("#rotate-dialog"),
			chromedp.Click(`#rotate-form input[value="3600"]`),
			chromedp.Click("#rotate-form button[type=submit]"),
			chromedp.WaitVisible("#secret-dialog"),
		)
		fresh := run(t, b, chromedp.Value("#secret-value"))
		if fresh == secret || !domain.WellFormed(fresh) {
			t.Fatalf("rotation showed %q", fresh)
		}
		if got := h.verify(secret); !got.Deprecated || !got.Valid {
			t.Errorf("old value with a 1-hour grace: %+v", got)
		}
		b.do(t, chromedp.Click("#secret-dialog button[type=submit]"), chromedp.WaitNotVisible("#secret-dialog"))
		if strings.Contains(b.dom(t), fresh) {
			t.Error("the page still holds the rotated key")
		}
		secret = fresh
	})

	t.Run("HistoryShowsWhoDidWhat", func(t *testing.T) {
		b.click(t, `//tr[td[text()="billing worker"]]//button[contains(@class,"history")]`)
		b.do(t, chromedp.WaitVisible(`#history-list li:nth-child(2)`))
		text := run(t, b, chromedp.Text("#history-list"))
		if !strings.Contains(text, "admin of acme (key) created the key") || !strings.Contains(text, "rotated the key") {
			t.Errorf("history = %q", text)
		}
		b.do(t, chromedp.Click("#history-dialog button[type=submit]"), chromedp.WaitNotVisible("#history-dialog"))
	})

	t.Run("HistoryReadsEveryPage", func(t *testing.T) {
		// More events than the largest page the API answers.
		k := h.create("acme", admin, map[string]any{"name": "rotated often"})
		const rotations = 1100
		for range rotations {
			if _, err := h.keys.Rotate(context.Background(), "acme", k.Key.ID, domain.RotateKey{By: asSystem}); err != nil {
				t.Fatal(err)
			}
		}
		b.click(t, `//tr[td[text()="rotated often"]]//button[contains(@class,"history")]`)
		b.do(t, chromedp.WaitVisible(fmt.Sprintf(`#history-list li:nth-child(%d)`, rotations+1)))
		if got := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll("#history-list li").length`)); got != rotations+1 {
			t.Errorf("the history shows %d events, want %d", got, rotations+1)
		}
		b.do(t, chromedp.Click("#history-dialog button[type=submit]"), chromedp.WaitNotVisible("#history-dialog"))
	})

	t.Run("DeleteNamesTheKeyAndRevokesIt", func(t *testing.T) {
		h.verify(secret) // a use, for "last used"
		b.do(t,
			chromedp.Reload(),
			chromedp.WaitVisible(`//td[text()="billing worker"]`),
		)
		b.click(t, `//tr[td[text()="billing worker"]]//button[contains(@class,"delete")]`)
		b.do(t, chromedp.WaitVisible("#delete-dialog"))
		body := run(t, b, chromedp.Text("#delete-dialog"))
		if !strings.Contains(body, "billing worker") || !strings.Contains(body, "fails at once") || strings.Contains(body, "Last used: never") {
			t.Errorf("confirmation = %q", body)
		}
		b.do(t,
			chromedp.Click("#delete-form button[type=submit]"),
			chromedp.WaitNotPresent(`//td[text()="billing worker"]`),
		)
		if got := h.verify(secret); got.Code != "REVOKED" {
			t.Errorf("after delete the key verifies %s, want REVOKED", got.Code)
		}
		b.do(t,
			chromedp.Click("#show-revoked"),
			chromedp.WaitVisible(`//tr[td[text()="billing worker"]]//span[contains(@class,"revoked")]`),
		)
	})

	t.Run("FollowsChangesMadeElsewhere", func(t *testing.T) {
		h.create("acme", admin, map[string]any{"name": "made by curl"})
		b.do(t, chromedp.WaitVisible(`//td[text()="made by curl"]`))
	})

	t.Run("NamesAreTextNotHTML", func(t *testing.T) {
		h.create("acme", admin, map[string]any{"name": `<img src=x onerror=alert(1)>`})
		b.do(t, chromedp.WaitVisible(`//td[text()="<img src=x onerror=alert(1)>"]`))
		if n := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll("#rows img").length`)); n != 0 {
			t.Errorf("%d img elements were made from a key name", n)
		}
		time.Sleep(200 * time.Millisecond)
		if b.alerts.Load() != 0 {
			t.Error("a key name ran script")
		}
	})
}

func TestManagerPageRefusals(t *testing.T) {
	h := start(t)
	h.bootstrap("acme")
	reader := h.bootstrap("acme", "invoices:read")

	t.Run("NonManagerSeesTheManagerOnlyMessage", func(t *testing.T) {
		b := newBrowser(t, 1280, 900)
		b.signIn(t, h, "acme", reader)
		b.do(t, chromedp.WaitVisible("#forbidden"))
		if text := run(t, b, chromedp.Text("#forbidden")); !strings.Contains(text, "This page is manager-only. Ask an org manager to grant you access in Users & Permissions.") {
			t.Errorf("message = %q", text)
		}
	})
	t.Run("InvalidCredentialSignsInAgain", func(t *testing.T) {
		b := newBrowser(t, 1280, 900)
		b.signIn(t, h, "acme", "not-a-key")
		b.do(t, chromedp.WaitVisible(`//p[@id="signin-reason"][contains(text(),"Sign in again")]`))
		if stored := run(t, b, chromedp.Evaluate[string](`sessionStorage.getItem("keyledger.credential") || ""`)); stored != "" {
			t.Error("a refused credential stays in session storage")
		}
	})
}

// TestManagerPageScreenshots renders the table and the one-time dialog at
// desktop and phone widths, checks that nothing overflows 375 px, and
// writes the pictures to $KEYLEDGER_SCREENSHOTS (docs/ for the README).
func TestManagerPageScreenshots(t *testing.T) {
	out := os.Getenv("KEYLEDGER_SCREENSHOTS")
	if out == "" {
		out = t.TempDir()
	}
	h := start(t)
	admin := h.bootstrap("acme")
	for _, name := range []string{"billing worker (production)", "nightly export", "support dashboard"} {
		h.create("acme", admin, map[string]any{"name": name})
	}
	for _, size := range []struct {
		name          string
		width, height int
	}{{"desktop", 1280, 800}, {"375px", 375, 812}} {
		t.Run(size.name, func(t *testing.T) {
			b := newBrowser(t, size.width, size.height)
			b.signIn(t, h, "acme", admin)
			b.do(t, chromedp.WaitVisible(`//td[text()="support dashboard"]`))
			if w := run(t, b, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > size.width {
				t.Errorf("the page is %d px wide in a %d px window", w, size.width)
			}
			png := run(t, b, chromedp.FullScreenshot(100))
			if err := os.WriteFile(filepath.Join(out, "api-keys-table-"+size.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
			b.do(t,
				chromedp.Click("#create"),
				chromedp.SendKeys("#key-name", "deploy bot"),
				chromedp.Click("#create-form button[type=submit]"),
				chromedp.WaitVisible("#secret-dialog"),
			)
			png = run(t, b, chromedp.CaptureScreenshot())
			if err := os.WriteFile(filepath.Join(out, "api-keys-secret-dialog-"+size.name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPageAssetsAndNothingElse serves the page's script and style with
// their types; any other name under /assets/keyledger/, the page's own HTML
// included, is the usual JSON 404.
func TestPageAssetsAndNothingElse(t *testing.T) {
	h := start(t)
	for file, want := range map[string]string{"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8", "usage.js": "text/javascript; charset=utf-8"} {
		res := h.must(http.StatusOK, "GET", "/assets/keyledger/"+file, "", nil)
		if got := res.Header.Get("Content-Type"); got != want {
			t.Errorf("%s: Content-Type %q, want %q", file, got, want)
		}
		if len(res.body) == 0 {
			t.Errorf("%s: empty", file)
		}
	}
	for _, path := range []string{"/assets/keyledger/index.html", "/assets/keyledger/missing.js", "/assets/keyledger/", "/assets/keyledger/x/app.js"} {
		if res := h.must(http.StatusNotFound, "GET", path, "", nil); res.errorCode() != "not_found" {
			t.Errorf("%s: %s, want the JSON not_found error", path, res.body)
		}
	}
}
