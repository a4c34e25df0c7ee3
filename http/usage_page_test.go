package http_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/apitest"
)

// drawn is what a chart on the page drew: the counts of its rectangles by
// outcome, the same summed from the numbers in its bars' titles, and how
// many bars (or sparkline columns) it has.
type drawn struct {
	Rects  countsJSON `json:"rects"`
	Titles countsJSON `json:"titles"`
	Bars   int        `json:"bars"`
	Label  string     `json:"label"`
	// Even: every rectangle is as tall per call as every other.
	Even bool `json:"even"`
}

// readChart reads the chart sel (an svg) and its bars (the g elements of
// class bar), from the page's DOM.
func (b *browser) readChart(t *testing.T, sel, bar string) drawn {
	t.Helper()
	js := fmt.Sprintf(`(() => {
  const s = document.querySelector(%q);
  if (!s) return null;
  const rects = {valid: 0, deprecated: 0, expired: 0, revoked: 0}, titles = {valid: 0, deprecated: 0, expired: 0, revoked: 0};
  const perCall = [];
  for (const r of s.querySelectorAll("rect[data-class]")) {
    if (Number(r.getAttribute("height")) <= 0) return null;
    rects[r.dataset.class] += Number(r.dataset.count);
    perCall.push(Number(r.getAttribute("height")) / Number(r.dataset.count));
  }
  const even = perCall.every((p) => Math.abs(p - perCall[0]) <= 0.01 * perCall[0] + 0.01);
  const bars = s.querySelectorAll(%q);
  for (const g of bars) {
    const text = g.querySelector("title").textContent;
    for (const o of Object.keys(titles)) {
      const m = text.match(new RegExp("(\\d+) " + o + "\\b"));
      titles[o] += m ? Number(m[1]) : 0;
    }
  }
  return {rects, titles, bars: bars.length, label: s.getAttribute("aria-label") || "", even};
})()`, sel, bar)
	var d *drawn
	for deadline := time.Now().Add(10 * time.Second); d == nil; time.Sleep(50 * time.Millisecond) {
		if d = run(t, b, chromedp.Evaluate[*drawn](js)); d == nil && time.Now().After(deadline) {
			t.Fatalf("no chart %s on the page", sel)
		}
	}
	return *d
}

// waitFor polls the page until sel matches an element: the charts are
// redrawn in place, which chromedp's own waits for a node may miss.
func (b *browser) waitFor(t *testing.T, sel string) {
	t.Helper()
	js := fmt.Sprintf(`document.querySelector(%q) !== null`, sel)
	for deadline := time.Now().Add(15 * time.Second); !run(t, b, chromedp.Evaluate[bool](js)); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nothing on the page matches %s", sel)
		}
	}
}

// without drops replaced, which a bar does not draw apart: it is a part of
// deprecated and expired.
func without(c countsJSON) countsJSON { c.Replaced = 0; return c }

// setFilter chooses a filter by use, as a manager does.
func (b *browser) setFilter(t *testing.T, value string) {
	t.Helper()
	b.do(t, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const s = document.getElementById("usage-filter"); s.value = %q; s.dispatchEvent(new Event("change")); })()`, value)))
}

// rowIDs waits until the table shows exactly want (key ids, in any order).
func (b *browser) rowIDs(t *testing.T, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got = run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#rows tr")].map(tr => tr.dataset.keyId).sort()`))
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("the table shows %v, want %v", got, want)
}

// TestUsagePage drives the usage on the page in headless Chromium over the
// real routes: verifications with known outcomes first, then what the
// sparklines, the detail chart, the Delete dialog and the filters show,
// compared with the counts caused and with the API's answers.
func TestUsagePage(t *testing.T) {
	var behind atomic.Int64 // how far the server's clock is behind
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.Now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
	})
	admin := h.bootstrap("acme")
	const xss = `<img src=x onerror=alert(1)>`

	// billing: 3 valid; rotated with an hour's grace; its old secret
	// presented twice (deprecated); the new one once, by xss.
	billing := h.create("acme", admin, map[string]any{"name": "billing worker"})
	old := billing.Secret
	for range 3 {
		if v := h.verifyAs(old, "billing/1"); !v.Valid {
			t.Fatalf("billing: %+v", v)
		}
	}
	billing = h.rotate("acme", billing.Key.ID, admin, map[string]any{"grace_period_seconds": 3600})
	for range 2 {
		if v := h.verifyAs(old, "billing/0"); !v.Deprecated {
			t.Fatalf("billing's old secret in its grace: %+v", v)
		}
	}
	h.verifyAs(billing.Secret, xss)
	wantBilling := countsJSON{Valid: 4, Deprecated: 2}

	// gone: revoked, and presented once since.
	gone := h.create("acme", admin, map[string]any{"name": "gone"})
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+gone.Key.ID, admin, nil)
	if v := h.verifyAs(gone.Secret, "cron/2"); v.Code != "REVOKED" {
		t.Fatalf("gone: %+v", v)
	}
	// stale: used once, 31 days ago by the server's clock; never: not used.
	stale := h.create("acme", admin, map[string]any{"name": "nightly export"})
	behind.Store(int64(31 * 24 * time.Hour))
	h.verifyAs(stale.Secret, "nightly/1")
	behind.Store(0)
	never := h.create("acme", admin, map[string]any{"name": "never used"})
	adminID := mustWhoami(h, admin)

	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible(`tr[data-key-id="`+billing.Key.ID+`"] svg.spark`))
	row := func(id string) string { return `tr[data-key-id="` + id + `"]` }

	t.Run("SparklineDrawsTheLast24Hours", func(t *testing.T) {
		d := b.readChart(t, row(billing.Key.ID)+" svg.spark", "g.col")
		if d.Bars != 24 {
			t.Errorf("the sparkline has %d columns, want 24 hours", d.Bars)
		}
		if !d.Even {
			t.Error("the sparkline's bars are not drawn to one scale")
		}
		if d.Rects != wantBilling || d.Titles != wantBilling {
			t.Errorf("billing's sparkline draws %+v, its titles say %+v; want %+v", d.Rects, d.Titles, wantBilling)
		}
		if !strings.Contains(d.Label, "6 calls (4 valid, 2 deprecated, 0 expired, 0 revoked)") {
			t.Errorf("its label: %q", d.Label)
		}
		if api := h.keyUsage("acme", billing.Key.ID, admin, "?window=24h&step=1h").Totals; without(api) != d.Rects {
			t.Errorf("the API says %+v, the page draws %+v", api, d.Rects)
		}
		if d := b.readChart(t, row(never.Key.ID)+" svg.spark", "g.col"); d.Rects != (countsJSON{}) || !strings.Contains(d.Label, "0 calls") {
			t.Errorf("an unused key's sparkline: %+v", d)
		}
		if d := b.readChart(t, row(stale.Key.ID)+" svg.spark", "g.col"); d.Rects != (countsJSON{}) {
			t.Errorf("a key used 31 days ago draws %+v in its last 24 hours", d.Rects)
		}
	})

	t.Run("RotatedKeyShowsWhoStillUsesTheOldSecret", func(t *testing.T) {
		note := run(t, b, chromedp.Text(row(billing.Key.ID)+" .old-secret"))
		if !strings.Contains(note, "2 calls in 24 h (2 in its grace period)") || !strings.Contains(note, "billing/0 at 127.0.0.1") || strings.Contains(note, "billing/1") {
			t.Errorf("the rotated key's note: %q, want 2 calls from billing/0 only", note)
		}
	})

	t.Run("DetailChartByPeriodIsTheAPIs", func(t *testing.T) {
		b.click(t, row(billing.Key.ID)+" button.usage-open")
		for _, p := range []struct {
			window, step string
			bars         int
		}{{"24h", "1h", 24}, {"7d", "1h", 168}, {"90d", "1d", 90}} {
			if p.window != "24h" {
				b.click(t, `#usage-switch button[data-window="`+p.window+`"]`)
			}
			b.waitFor(t, `#usage-chart[data-window="`+p.window+`"] svg`)
			d := b.readChart(t, "#usage-chart svg", "g.bar")
			api := h.keyUsage("acme", billing.Key.ID, admin, "?window="+p.window+"&step="+p.step)
			if d.Bars != p.bars || d.Bars != len(api.Buckets) {
				t.Errorf("%s: %d bars, the API %d buckets, want %d", p.window, d.Bars, len(api.Buckets), p.bars)
			}
			if !d.Even {
				t.Errorf("%s: the bars are not drawn to one scale", p.window)
			}
			if d.Rects != wantBilling || d.Titles != wantBilling || without(api.Totals) != wantBilling {
				t.Errorf("%s: the chart draws %+v, its titles say %+v, the API %+v; want %+v", p.window, d.Rects, d.Titles, api.Totals, wantBilling)
			}
			legend := run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#usage-legend li")].map(li => li.dataset.class + "=" + li.querySelector("strong").textContent)`))
			if want := []string{"valid=4", "deprecated=2", "expired=0", "revoked=0"}; !slices.Equal(legend, want) {
				t.Errorf("%s: legend %v, want %v", p.window, legend, want)
			}
			if old := run(t, b, chromedp.Text("#usage-old")); !strings.Contains(old, "2 calls in "+map[string]string{"24h": "the last 24 hours", "7d": "the last 7 days", "90d": "the last 90 days"}[p.window]) {
				t.Errorf("%s: old secret note %q", p.window, old)
			}
		}
		// Latest first, to the second: these three came within one, in any order.
		callers := run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#usage-callers tr")].map(tr => [tr.cells[0].textContent, tr.cells[1].textContent, tr.cells[2].textContent, tr.cells[5].textContent].join("|"))`))
		slices.Sort(callers)
		if want := []string{xss + "|127.0.0.1|1|valid", "billing/0|127.0.0.1|2|deprecated", "billing/1|127.0.0.1|3|valid"}; !slices.Equal(callers, want) {
			t.Errorf("recent callers: %q, want %q", callers, want)
		}
		b.do(t, chromedp.Click("#usage-dialog button[type=submit]"), chromedp.WaitNotVisible("#usage-dialog"))

		// A use 31 days ago: none in 24 hours, one in 90 days.
		b.click(t, row(stale.Key.ID)+" button.usage-open")
		b.waitFor(t, `#usage-chart[data-window="24h"] svg`)
		if d := b.readChart(t, "#usage-chart svg", "g.bar"); d.Rects != (countsJSON{}) {
			t.Errorf("stale, 24 hours: %+v", d.Rects)
		}
		b.click(t, `#usage-switch button[data-window="90d"]`)
		b.waitFor(t, `#usage-chart[data-window="90d"] svg`)
		if d := b.readChart(t, "#usage-chart svg", "g.bar"); d.Rects != (countsJSON{Valid: 1}) || d.Titles != d.Rects {
			t.Errorf("stale, 90 days: draws %+v, titles %+v; want the one valid use", d.Rects, d.Titles)
		}
		b.do(t, chromedp.Click("#usage-dialog button[type=submit]"), chromedp.WaitNotVisible("#usage-dialog"))
	})

	t.Run("DeleteDialogSaysTheLast24Hours", func(t *testing.T) {
		b.click(t, row(billing.Key.ID)+" button.delete")
		b.waitFor(t, `#delete-usage[data-state="done"]`)
		text := run(t, b, chromedp.Text("#delete-usage"))
		if want := "In the last 24 hours: 6 calls (4 valid, 2 deprecated, 0 expired, 0 revoked), by 3 callers:"; text != want {
			t.Errorf("the Delete dialog says %q, want %q", text, want)
		}
		list := run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#delete-callers li")].map(li => li.textContent.replace(/ since .*\(/, " … ("))`))
		slices.Sort(list)
		if want := []string{xss + " at 127.0.0.1 — 1 call … (valid)", "billing/0 at 127.0.0.1 — 2 calls … (deprecated)", "billing/1 at 127.0.0.1 — 3 calls … (valid)"}; !slices.Equal(list, want) {
			t.Errorf("the callers it names: %q, want %q", list, want)
		}
		b.do(t, chromedp.Click("#delete-dialog .cancel"), chromedp.WaitNotVisible("#delete-dialog"))
		b.click(t, row(never.Key.ID)+" button.delete")
		b.waitFor(t, `#delete-usage[data-state="done"]`)
		if text := run(t, b, chromedp.Text("#delete-usage")); text != "Not used in the last 24 hours." {
			t.Errorf("an unused key's Delete dialog says %q", text)
		}
		b.do(t, chromedp.Click("#delete-dialog .cancel"), chromedp.WaitNotVisible("#delete-dialog"))
	})

	t.Run("FilterKeysNotUsedIn30Days", func(t *testing.T) {
		b.setFilter(t, "unused")
		b.rowIDs(t, stale.Key.ID, never.Key.ID)
		if note := run(t, b, chromedp.Text(row(stale.Key.ID)+" .filter-note")); note != "No valid use in 30 days" {
			t.Errorf("its note: %q", note)
		}
		b.setFilter(t, "")
		b.rowIDs(t, adminID, billing.Key.ID, stale.Key.ID, never.Key.ID)
	})

	t.Run("FilterRevokedKeysStillPresented", func(t *testing.T) {
		b.setFilter(t, "revoked")
		b.rowIDs(t, gone.Key.ID)
		if note := run(t, b, chromedp.Text(row(gone.Key.ID)+" .filter-note")); note != "Revoked, and presented 1 call in the last 30 days" {
			t.Errorf("its note: %q", note)
		}
		if d := b.readChart(t, row(gone.Key.ID)+" svg.spark", "g.col"); d.Rects != (countsJSON{Revoked: 1}) {
			t.Errorf("the revoked key's sparkline draws %+v, want the one revoked call", d.Rects)
		}
		b.setFilter(t, "replaced")
		b.rowIDs(t, billing.Key.ID)
		b.setFilter(t, "")
		b.rowIDs(t, adminID, billing.Key.ID, stale.Key.ID, never.Key.ID)
	})

	t.Run("UserAgentIsTextNotHTML", func(t *testing.T) {
		b.click(t, row(billing.Key.ID)+" button.usage-open")
		b.waitFor(t, `#usage-chart[data-window="24h"] svg`)
		if n := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll("img").length`)); n != 0 {
			t.Errorf("%d img elements were made from a User-Agent", n)
		}
		time.Sleep(200 * time.Millisecond)
		if b.alerts.Load() != 0 {
			t.Error("a User-Agent ran script")
		}
		b.do(t, chromedp.Click("#usage-dialog button[type=submit]"), chromedp.WaitNotVisible("#usage-dialog"))
	})
}

// TestUsagePageScreenshots draws a day of made-up traffic — steady use, a
// rotation with its old secret fading out, a revoked key still presented —
// checks that each sparkline and the detail chart draw the API's totals
// and that nothing overflows, and writes docs/usage-table.png and
// docs/usage-detail.png (to $KEYLEDGER_SCREENSHOTS).
func TestUsagePageScreenshots(t *testing.T) {
	out := os.Getenv("KEYLEDGER_SCREENSHOTS")
	if out == "" {
		out = t.TempDir()
	}
	var behind atomic.Int64
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.Now = func() time.Time { return time.Now().Add(-time.Duration(behind.Load())) }
	})
	admin := h.bootstrap("acme")
	at := func(ago time.Duration, secret, agent string, n int) {
		behind.Store(int64(ago))
		for range n {
			h.verifyAs(secret, agent)
		}
		behind.Store(0)
	}
	billing := h.create("acme", admin, map[string]any{"name": "billing worker (production)"})
	export := h.create("acme", admin, map[string]any{"name": "nightly export"})
	gone := h.create("acme", admin, map[string]any{"name": "support dashboard (old)"})
	h.create("acme", admin, map[string]any{"name": "staging smoke tests"})
	for hour := 23; hour >= 0; hour-- {
		ago := time.Duration(hour)*time.Hour + 5*time.Minute
		at(ago, billing.Secret, "billing-worker/2.4 (+prod-eu-1)", 3+(hour*7)%5)
		if hour >= 8 && hour <= 11 {
			at(ago, export.Secret, "export-cron/1.0", 6+hour%3)
		}
		if hour < 6 {
			at(ago, gone.Secret, "support-ui/0.9", 1+hour%2)
		}
	}
	oldSecret := billing.Secret
	billing = h.rotate("acme", billing.Key.ID, admin, map[string]any{"grace_period_seconds": 7 * 24 * 3600})
	for hour := 5; hour >= 0; hour-- {
		ago := time.Duration(hour)*time.Hour + 3*time.Minute
		at(ago, billing.Secret, "billing-worker/2.5 (+prod-eu-1)", 2+(5-hour))
		at(ago, oldSecret, "billing-worker/2.4 (+prod-us-2)", 1+hour/2)
	}
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+gone.Key.ID, admin, nil)
	at(30*time.Minute, gone.Secret, "support-ui/0.9", 2)

	b := newBrowser(t, 1280, 800)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible(`tr[data-key-id="`+billing.Key.ID+`"] svg.spark`), chromedp.Click("#show-revoked"),
		chromedp.WaitVisible(`tr[data-key-id="`+gone.Key.ID+`"] svg.spark`))
	adminID := mustWhoami(h, admin)
	rows := run(t, b, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#rows tr")].map(tr => tr.dataset.keyId)`))
	if len(rows) != 5 {
		t.Fatalf("the table shows %d keys, want 5", len(rows))
	}
	for _, id := range rows {
		if id == adminID {
			continue // the page's own calls use it meanwhile
		}
		d := b.readChart(t, `tr[data-key-id="`+id+`"] svg.spark`, "g.col")
		if api := h.keyUsage("acme", id, admin, "?window=24h&step=1h").Totals; without(api) != d.Rects {
			t.Errorf("%s: the sparkline draws %+v, the API says %+v", id, d.Rects, api)
		}
	}
	if w := run(t, b, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 1280 {
		t.Errorf("the page is %d px wide in a 1280 px window", w)
	}
	png := run(t, b, chromedp.Screenshot("#keys"))
	if err := os.WriteFile(filepath.Join(out, "usage-table.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	b.click(t, `tr[data-key-id="`+billing.Key.ID+`"] button.usage-open`)
	b.waitFor(t, `#usage-chart[data-window="24h"] svg`)
	d := b.readChart(t, "#usage-chart svg", "g.bar")
	if api := h.keyUsage("acme", billing.Key.ID, admin, "?window=24h&step=1h").Totals; without(api) != d.Rects || d.Titles != d.Rects || api.Deprecated == 0 || !d.Even {
		t.Errorf("the detail chart draws %+v (titles %+v), the API says %+v", d.Rects, d.Titles, api)
	}
	png = run(t, b, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(out, "usage-detail.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}

	// On a phone: the table's cards and the detail fit 375 px.
	phone := newBrowser(t, 375, 812)
	phone.signIn(t, h, "acme", admin)
	phone.waitFor(t, `tr[data-key-id="`+billing.Key.ID+`"] svg.spark`)
	if w := run(t, phone, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 375 {
		t.Errorf("the table is %d px wide in a 375 px window", w)
	}
	phone.click(t, `tr[data-key-id="`+billing.Key.ID+`"] button.usage-open`)
	phone.waitFor(t, `#usage-chart[data-window="24h"] svg`)
	if w := run(t, phone, chromedp.Evaluate[int](`(() => { const d = document.getElementById("usage-dialog"); return Math.max(d.scrollWidth, d.getBoundingClientRect().right); })()`)); w > 375 {
		t.Errorf("the detail is %d px wide in a 375 px window", w)
	}
}

// TestUsagePageReadsTheSparklinesInView: a table of many keys asks for the
// usage of the rows in view, not of every key at once, and a row scrolled
// into view gets its sparkline.
func TestUsagePageReadsTheSparklinesInView(t *testing.T) {
	var asked atomic.Int32
	h := startOpts(t, t.TempDir(), apitest.Options{Wrap: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/v1/orgs/acme/keys/") && strings.HasSuffix(r.URL.Path, "/usage") {
				asked.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}})
	admin := h.bootstrap("acme")
	const n = 120
	var first issued
	for i := range n {
		k := h.create("acme", admin, map[string]any{"name": fmt.Sprintf("worker %03d", i)})
		if i == 0 {
			first = k // listed last: the newest first
		}
	}
	h.verifyAs(first.Secret, "worker/0")
	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", admin)
	b.waitFor(t, "#rows tr:first-child svg.spark")
	time.Sleep(500 * time.Millisecond)
	t.Logf("with the first rows in view, the page asked for %d keys' usage of %d", asked.Load(), n+1)
	if got := asked.Load(); got >= n/2 {
		t.Errorf("the page asked for %d keys' usage with a few rows in view, of %d keys", got, n+1)
	}
	if got := run(t, b, chromedp.Evaluate[int](`document.querySelectorAll("#rows svg.spark").length`)); got == 0 || got >= n/2 {
		t.Errorf("%d sparklines drawn with a few rows in view", got)
	}
	sel := `tr[data-key-id="` + first.Key.ID + `"]`
	b.do(t, chromedp.Evaluate[chromedp.Void](`document.querySelector('`+sel+`').scrollIntoView()`))
	if d := b.readChart(t, sel+" svg.spark", "g.col"); d.Rects != (countsJSON{Valid: 1}) {
		t.Errorf("the row scrolled into view draws %+v, want its one valid call", d.Rects)
	}
}
