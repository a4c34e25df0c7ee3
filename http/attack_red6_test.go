package http_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
)

// Red team 6: the usage endpoints.

// TestRed6KeyUsedOnlyInProcessIsNotUnused: "which keys were not used in
// 30 days" (unused_since=30d, the page's "not used in 30 days" filter)
// read only the last use over HTTP, which a Go verifier's verifications
// never touch: a key that a service verifies in process a million times a
// day, reported and shown in its usage, was listed as unused, and a
// manager cleaning up would delete a key in use. A valid use reported by
// a verifier is a use.
func TestRed6KeyUsedOnlyInProcessIsNotUnused(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "in-process"})
	idle := h.create("acme", admin, map[string]any{"name": "idle"})
	now := time.Now()
	// What ServeReports does with a verifier's report on keyledger.usage.report.
	known := func(org, id string) bool { _, ok := h.api.Listing.Get(org, id); return ok }
	report := fmt.Sprintf("keyledger-outcomes-v1\n"+`{"o":"acme","k":%q,"m":[[%d,1000000,0,0,0,0]],"c":[{"a":"10.0.0.5","u":"billing/3","f":%d,"l":%d,"n":1000000,"r":0}]}`+"\n",
		k.Key.ID, now.Unix()/60, now.Unix(), now.Unix())
	if n, err := h.api.Outcomes.MergeReport([]byte(report), "billing", known); n != 1 || err != nil {
		t.Fatalf("report: %d %v", n, err)
	}
	if u := h.keyUsage("acme", k.Key.ID, admin, ""); u.Totals.Valid != 1_000_000 {
		t.Fatalf("the key's usage shows %d valid, want the million reported", u.Totals.Valid)
	}
	got := usageIDs(h.orgUsage(admin, "?status=active&unused_since=30d"))
	if strings.Contains(got, k.Key.ID) {
		t.Errorf("keys not used in 30 days: %s, lists %s, verified validly a million times in the last minute by a verifier", got, k.Key.ID)
	}
	if !strings.Contains(got, idle.Key.ID) {
		t.Errorf("keys not used in 30 days: %s, want %s among them", got, idle.Key.ID)
	}
}

// TestRed6UsageNeedsTheManagerAsTheListingDoes (held): a key without
// keys:manage, a key of another org and no key at all are refused the
// usage routes as the listing of keys refuses them, with nothing of the
// keys in the answer.
func TestRed6UsageNeedsTheManagerAsTheListingDoes(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "k"})
	reader := h.create("acme", admin, map[string]any{"name": "reader", "scopes": []string{"read"}})
	h.verify(k.Secret)
	for _, token := range []string{reader.Secret, k.Secret, ""} {
		want := h.request("GET", "/v1/orgs/acme/keys", token, nil).StatusCode
		if want == http.StatusOK {
			t.Fatalf("a key without keys:manage lists the keys")
		}
		for _, path := range []string{"/v1/orgs/acme/keys/" + k.Key.ID + "/usage", "/v1/orgs/acme/usage", "/v1/orgs/acme/usage?window=90d&limit=1000"} {
			res := h.request("GET", path, token, nil)
			if res.StatusCode != want || strings.Contains(string(res.body), k.Key.ID) {
				t.Errorf("GET %s: %d %s, want %d as the listing", path, res.StatusCode, res.body, want)
			}
		}
	}
}

// TestRed6UsageParametersNeverCrash (held): odd values of every parameter
// answer 400 or 200, never 500.
func TestRed6UsageParametersNeverCrash(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "k"})
	odd := []string{"", "0", "-1", "1e9", "99999999999999999999", "%00", "24h%0a", "P1D", "30d30d", "-30d", "0d", "1000000d",
		"9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "2026-12-04T00:00:00%2B99:00", strings.Repeat("9", 400), "key_" + strings.Repeat("0", 26)}
	for _, name := range []string{"window", "step", "unused_since", "presented", "status", "limit", "cursor", "min_seq"} {
		for _, v := range odd {
			for _, path := range []string{"/v1/orgs/acme/keys/" + k.Key.ID + "/usage", "/v1/orgs/acme/usage"} {
				res := h.request("GET", path+"?"+name+"="+v, admin, nil)
				if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusBadRequest && res.StatusCode != http.StatusNotFound {
					t.Errorf("GET %s?%s=%s: %d %s", path, name, v, res.StatusCode, res.body)
				}
			}
		}
	}
}

// TestRed6NoSecretOfAnyOutcomeRests (held): after verifications of a
// current, a deprecated, an expired (rotated away) and a revoked secret,
// over HTTP on two instances sharing outcomes, neither the outcome stream
// nor its rollup holds any of the secrets or their hashes.
func TestRed6NoSecretOfAnyOutcomeRests(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	a, b := instance(t, env, sharedOutcomes(t, env)), instance(t, env, sharedOutcomes(t, env))
	admin := a.bootstrap("acme")
	k := makeOutcomeKeys(a, admin)
	deadline := time.Now().Add(10 * time.Second)
	for b.verify(k.revokedOld).Code != domain.VerifyRevoked && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	secrets := []string{admin, k.graced.Secret, k.gracedOld, k.abrupt.Secret, k.abruptOld, k.revokedOld}
	for _, h := range []*harness{a, b} {
		for i, s := range secrets {
			h.verifyAs(s, fmt.Sprintf("agent-%d", i))
		}
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if a.keyUsage("acme", k.revoked.Key.ID, admin, "").Totals.Revoked >= 3 {
			break
		}
	}
	// The rollup too, as an instance writes it every 10 minutes.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := events.OpenOutcomes(ctx, env.JS, 1, 0, natstest.Quiet())
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := a.api.Outcomes.Rollup(ctx, store, true); !wrote || err != nil {
		t.Fatalf("rollup: %v %v", wrote, err)
	}
	if rc, _, err := store.ReadRollup(ctx); rc == nil || err != nil {
		t.Fatalf("no rollup to search: %v", err)
	} else {
		rc.Close()
	}
	a.stop()
	b.stop()
	env.Stop()
	searchOutcomeFiles(t, dir, k.revoked.Key.ID, secrets)
}

// TestRed6TwentyUserAgentsHideWhoPresentsTheOldSecret (inherent, measured):
// a holder of a key's current secret who calls with 20 distinct
// User-Agents pushes the caller still presenting the old secret out of
// the key's 20 callers: the callers are per key, the latest kept. What
// holds: the counts still say the old secret is presented, and how often.
func TestRed6TwentyUserAgentsHideWhoPresentsTheOldSecret(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := makeOutcomeKeys(h, admin)
	h.verifyAs(k.gracedOld, "legacy-cron/1.0")
	calls := 0
	for i := range 40 {
		h.verifyAs(k.graced.Secret, fmt.Sprintf("noise/%d", i))
		calls++
		hidden := true
		for _, c := range h.keyUsage("acme", k.graced.Key.ID, admin, "").Callers {
			if c.UserAgent == "legacy-cron/1.0" {
				hidden = false
			}
		}
		if hidden {
			break
		}
	}
	u := h.keyUsage("acme", k.graced.Key.ID, admin, "")
	t.Logf("the old secret's caller left the key's callers after %d calls with the current secret and distinct User-Agents; the counts keep %d deprecated, %d replaced", calls, u.Totals.Deprecated, u.Totals.Replaced)
	if u.Totals.Deprecated != 1 || u.Totals.Replaced != 1 {
		t.Errorf("the old secret's presentation is gone from the counts too: %+v", u.Totals)
	}
}

// TestRed6OrgUsageOfAHugeOrgIsBounded (held, measured): an org of many
// keys (KEYLEDGER_TEST_RED6_KEYS, 20,000 by default), every one with
// outcomes; a filter that matches none (unused_since=30d when all were
// used, presented=revoked when none is revoked) examines at most 10,000
// keys a request and answers a cursor to go on from; the time of each
// request is logged.
func TestRed6OrgUsageOfAHugeOrgIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("makes many keys")
	}
	n := 20_000
	if v := os.Getenv("KEYLEDGER_TEST_RED6_KEYS"); v != "" {
		fmt.Sscan(v, &n)
	}
	h := start(t)
	admin := h.bootstrap("acme")
	ctx := context.Background()
	by := domain.SystemPrincipal("test", "test")
	start := time.Now()
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				k, err := h.keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: fmt.Sprintf("k%d", i), Scopes: []string{"read"}, By: by})
				if err != nil {
					errs <- err
					return
				}
				ids[i] = k.Key.ID
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	now := time.Now()
	for _, id := range ids {
		h.api.Outcomes.Record("acme", id, usage.Outcome{Class: usage.Valid}, usage.Caller{UserAgent: "x"}, now)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, ok := h.api.Listing.Get("acme", ids[n-1]); ok {
			break
		}
	}
	t.Logf("%d keys made and recorded in %v", n, time.Since(start))
	for _, q := range []string{"?limit=1000", "?status=active&unused_since=30d&limit=1000", "?presented=revoked&limit=1", "?window=90d&presented=replaced&limit=1000"} {
		cursor, pages, keys := "", 0, 0
		var worst time.Duration
		for {
			t0 := time.Now()
			u := h.orgUsage(admin, q+"&cursor="+cursor)
			worst = max(worst, time.Since(t0))
			pages++
			keys += len(u.Keys)
			if cursor = u.NextCursor; cursor == "" || pages > n/1000+n/10000+5 {
				break
			}
		}
		t.Logf("GET /v1/orgs/acme/usage%s: %d pages to the end, %d keys, worst %v a request", q, pages, keys, worst)
		if strings.Contains(q, "unused") || strings.Contains(q, "presented") {
			if keys != 0 {
				t.Errorf("%s: %d keys, want none", q, keys)
			}
			if want := n/10000 + 1; pages > want+1 {
				t.Errorf("%s: %d pages, want about %d (10,000 keys examined a page)", q, pages, want)
			}
		}
		if worst > 2*time.Second {
			t.Errorf("%s: a request took %v", q, worst)
		}
	}
}

// TestRed6ReportOfUnknownOrMisplacedKeysTakesNothing (held): with the
// known keys ServeReports is given (the listing), a report of keys that
// do not exist, or of a real key under another org or a near spelling, takes
// no memory and counts nothing. (A key of another org under its own org
// is counted: the read-only credential is the deployment's, and a
// verifier verifies every org's keys.)
func TestRed6ReportOfUnknownOrMisplacedKeysTakesNothing(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	h.bootstrap("globex")
	k := h.create("acme", admin, map[string]any{"name": "k"})
	known := func(org, id string) bool { _, ok := h.api.Listing.Get(org, id); return ok }
	before := h.api.Outcomes.Known()
	minute := time.Now().Unix() / 60
	var b strings.Builder
	b.WriteString("keyledger-outcomes-v1\n")
	fmt.Fprintf(&b, `{"o":"globex","k":%q,"m":[[%d,9,0,0,0,0]]}`+"\n", k.Key.ID, minute)
	fmt.Fprintf(&b, `{"o":"acme ","k":%q,"m":[[%d,9,0,0,0,0]]}`+"\n", k.Key.ID, minute)
	fmt.Fprintf(&b, `{"o":"ACME","k":%q,"m":[[%d,9,0,0,0,0]]}`+"\n", k.Key.ID, minute)
	fmt.Fprintf(&b, `{"o":"acme","k":%q,"m":[[%d,9,0,0,0,0]]}`+"\n", strings.ToLower(k.Key.ID), minute)
	for i := 0; b.Len() < usage.MaxReportBytes-100; i++ {
		fmt.Fprintf(&b, `{"o":"acme","k":"key_%026d","m":[[%d,9,0,0,0,0]]}`+"\n", i, minute)
	}
	n, err := h.api.Outcomes.MergeReport([]byte(b.String()), "svc", known)
	if n != 0 || h.api.Outcomes.Known() != before {
		t.Errorf("a report of unknown and misplaced keys counted %d (%v) and left %d keys with aggregates, %d before", n, err, h.api.Outcomes.Known(), before)
	}
	if u := h.keyUsage("acme", k.Key.ID, admin, ""); u.Totals.Valid != 0 {
		t.Errorf("acme's key counts %d valid from reports naming it elsewhere", u.Totals.Valid)
	}
}
