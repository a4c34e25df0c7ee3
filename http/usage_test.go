package http_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/usage"
)

type countsJSON struct{ Valid, Deprecated, Expired, Revoked, Replaced uint64 }

type keyUsageJSON struct {
	KeyID   string `json:"key_id"`
	Window  string
	Step    string
	Buckets []struct {
		Start string
		countsJSON
	}
	Totals  countsJSON
	Callers []struct {
		Address     string
		UserAgent   string `json:"user_agent"`
		Service     string
		FirstSeen   string `json:"first_seen"`
		LastSeen    string `json:"last_seen"`
		Count       uint64
		LastOutcome string `json:"last_outcome"`
	}
}

func (h *harness) keyUsage(org, id, token, query string) keyUsageJSON {
	h.t.Helper()
	var out keyUsageJSON
	h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/keys/"+id+"/usage"+query, token, nil).json(h.t, &out)
	return out
}

// verifyAs verifies secret with a User-Agent.
func (h *harness) verifyAs(secret, agent string) verifyView {
	h.t.Helper()
	var out verifyView
	h.must(http.StatusOK, "POST", "/v1/verify", "", map[string]string{"key": secret}, "User-Agent", agent).json(h.t, &out)
	return out
}

// outcomeKeys makes the keys of the outcome tests: one rotated with a
// grace period (its old secret deprecated), one rotated without (its old
// secret expired), one revoked.
type outcomeKeys struct {
	graced, abrupt, revoked          issued
	gracedOld, abruptOld, revokedOld string
}

func makeOutcomeKeys(h *harness, admin string) outcomeKeys {
	h.t.Helper()
	var k outcomeKeys
	k.graced = h.create("acme", admin, map[string]any{"name": "graced"})
	k.gracedOld = k.graced.Secret
	k.graced = h.rotate("acme", k.graced.Key.ID, admin, map[string]any{"grace_period_seconds": 3600})
	k.abrupt = h.create("acme", admin, map[string]any{"name": "abrupt"})
	k.abruptOld = k.abrupt.Secret
	k.abrupt = h.rotate("acme", k.abrupt.Key.ID, admin, map[string]any{"grace_period_seconds": 0})
	k.revoked = h.create("acme", admin, map[string]any{"name": "revoked"})
	k.revokedOld = k.revoked.Secret
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.revoked.Key.ID, admin, nil)
	return k
}

func TestKeyUsageCountsEachOutcomeAgainstItsKey(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := makeOutcomeKeys(h, admin)
	for range 2 {
		if v := h.verifyAs(k.graced.Secret, "billing/1"); !v.Valid {
			t.Fatalf("new secret: %+v", v)
		}
	}
	if v := h.verifyAs(k.gracedOld, "billing/0"); !v.Valid || !v.Deprecated {
		t.Fatalf("old secret in its grace: %+v", v)
	}
	if v := h.verifyAs(k.abruptOld, "cron"); v.Code != domain.VerifyExpired {
		t.Fatalf("replaced secret past its grace: %+v", v)
	}
	if v := h.verifyAs(k.revokedOld, "cron"); v.Code != domain.VerifyRevoked {
		t.Fatalf("revoked: %+v", v)
	}
	h.verifyAs("kl_nosuchkeyatall0000000000000000000000000000", "cron") // NOT_FOUND: no key to count
	// whoami counts as a use of its key.
	h.must(http.StatusOK, "GET", "/v1/whoami", k.graced.Secret, nil, "User-Agent", "billing/1")

	u := h.keyUsage("acme", k.graced.Key.ID, admin, "?window=24h&step=1m")
	if got, want := len(u.Buckets), 1440; got != want {
		t.Fatalf("%d minute buckets in 24h, want %d", got, want)
	}
	if got, want := u.Totals, (countsJSON{Valid: 3, Deprecated: 1, Replaced: 1}); got != want {
		t.Errorf("graced key: totals %+v, want %+v", got, want)
	}
	last := u.Buckets[len(u.Buckets)-1]
	if last.Valid+u.Buckets[len(u.Buckets)-2].Valid != 3 {
		t.Errorf("the last two minutes hold %d and %d valid, want 3 in all", last.Valid, u.Buckets[len(u.Buckets)-2].Valid)
	}
	for i := 1; i < len(u.Buckets); i++ {
		a, _ := time.Parse(time.RFC3339, u.Buckets[i-1].Start)
		b, _ := time.Parse(time.RFC3339, u.Buckets[i].Start)
		if b.Sub(a) != time.Minute {
			t.Fatalf("buckets %d and %d are %s apart, want contiguous minutes", i-1, i, b.Sub(a))
		}
	}
	if len(u.Callers) != 2 || u.Callers[0].UserAgent != "billing/1" || u.Callers[0].Count != 3 || u.Callers[0].Address != "127.0.0.1" ||
		u.Callers[1].UserAgent != "billing/0" || u.Callers[1].LastOutcome != "deprecated" {
		t.Errorf("callers %+v, want billing/1 (3 calls, latest) then billing/0 (deprecated)", u.Callers)
	}

	if got, want := h.keyUsage("acme", k.abrupt.Key.ID, admin, "").Totals, (countsJSON{Expired: 1, Replaced: 1}); got != want {
		t.Errorf("abruptly rotated key: %+v, want %+v", got, want)
	}
	if got, want := h.keyUsage("acme", k.revoked.Key.ID, admin, "?window=7d").Totals, (countsJSON{Revoked: 1}); got != want {
		t.Errorf("revoked key: %+v, want %+v", got, want)
	}
	if u := h.keyUsage("acme", k.revoked.Key.ID, admin, "?window=90d&step=1d"); len(u.Buckets) != 90 || u.Step != "1d" {
		t.Errorf("90d by day: %d buckets of %s, want 90 of 1d", len(u.Buckets), u.Step)
	}
	// Management calls count against the admin's key.
	if got := h.keyUsage("acme", mustWhoami(h, admin), admin, "").Totals.Valid; got < 8 {
		t.Errorf("the admin key counts %d valid uses, want one per management call (at least 8)", got)
	}
}

func mustWhoami(h *harness, secret string) string {
	h.t.Helper()
	var me struct{ ID string }
	h.must(http.StatusOK, "GET", "/v1/whoami", secret, nil).json(h.t, &me)
	return me.ID
}

func TestUsageBadParametersAre400AndChangeNothing(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "k"})
	h.verify(k.Key.ID) // MALFORMED: counts nothing
	h.verify(k.Secret)
	before := h.keyUsage("acme", k.Key.ID, admin, "")
	for _, q := range []string{"?window=7d&step=1m", "?window=90d&step=1m", "?window=1y", "?step=5m", "?min_seq=x"} {
		res := h.request("GET", "/v1/orgs/acme/keys/"+k.Key.ID+"/usage"+q, admin, nil)
		if res.StatusCode != http.StatusBadRequest || res.errorCode() != "invalid" {
			t.Errorf("key usage %s: %d %s, want 400 invalid", q, res.StatusCode, res.body)
		}
	}
	for _, q := range []string{"?window=2d", "?status=gone", "?presented=lost", "?unused_since=yesterday", "?limit=0", "?cursor=../x", "?window=30d&step=1m"} {
		res := h.request("GET", "/v1/orgs/acme/usage"+q, admin, nil)
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("org usage %s: %d %s, want 400", q, res.StatusCode, res.body)
		}
	}
	after := h.keyUsage("acme", k.Key.ID, admin, "")
	if before.Totals != after.Totals || after.Totals.Valid != 1 || len(after.Callers) != 1 {
		t.Errorf("totals %+v then %+v, want one valid use throughout", before.Totals, after.Totals)
	}
	h.must(http.StatusNotFound, "GET", "/v1/orgs/acme/keys/key_00000000000000000000000000/usage", admin, nil)
}

func TestUsageOfAnotherOrgsKeyIsRefusedAsTheKeyIs(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	other := h.bootstrap("globex")
	k := h.create("acme", admin, map[string]any{"name": "k"})
	h.verify(k.Secret)
	want := h.request("GET", "/v1/orgs/acme/keys/"+k.Key.ID, other, nil).StatusCode
	if want != http.StatusForbidden && want != http.StatusNotFound {
		t.Fatalf("another org's manager reads the key: %d", want)
	}
	for _, path := range []string{"/v1/orgs/acme/keys/" + k.Key.ID + "/usage", "/v1/orgs/acme/usage"} {
		res := h.request("GET", path, other, nil)
		if res.StatusCode != want || bytes.Contains(res.body, []byte(k.Key.ID)) {
			t.Errorf("globex's manager GET %s: %d %s, want %d and nothing of the key", path, res.StatusCode, res.body, want)
		}
	}
	h.must(http.StatusUnauthorized, "GET", "/v1/orgs/acme/usage", "", nil)
}

type orgUsageJSON struct {
	Window string
	Keys   []struct {
		KeyID  string `json:"key_id"`
		Status string
		Totals countsJSON
	}
	NextCursor string `json:"next_cursor"`
}

func (h *harness) orgUsage(token, query string) orgUsageJSON {
	h.t.Helper()
	var out orgUsageJSON
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/usage"+query, token, nil).json(h.t, &out)
	return out
}

func usageIDs(u orgUsageJSON) string {
	var l []string
	for _, k := range u.Keys {
		l = append(l, k.KeyID)
	}
	return strings.Join(l, ",")
}

func TestOrgUsageAnswersUnusedKeysAndOldSecretsStillPresented(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	adminID := mustWhoami(h, admin)
	k := makeOutcomeKeys(h, admin)
	unused := h.create("acme", admin, map[string]any{"name": "unused"})
	h.verify(k.gracedOld)  // deprecated: a replaced secret, and a valid use
	h.verify(k.revokedOld) // revoked, presented

	if got, want := usageIDs(h.orgUsage(admin, "?window=30d&presented=revoked")), k.revoked.Key.ID; got != want {
		t.Errorf("revoked keys still presented: %s, want %s", got, want)
	}
	if got, want := usageIDs(h.orgUsage(admin, "?presented=replaced")), k.graced.Key.ID; got != want {
		t.Errorf("rotated keys whose old secret is presented: %s, want %s", got, want)
	}
	h.verify(k.abruptOld) // expired: replaced, past its grace
	if got := usageIDs(h.orgUsage(admin, "?presented=replaced")); !strings.Contains(got, k.abrupt.Key.ID) || !strings.Contains(got, k.graced.Key.ID) {
		t.Errorf("rotated keys whose old secret is presented: %s, want %s and %s", got, k.graced.Key.ID, k.abrupt.Key.ID)
	}
	// Not used in 30 days: every active key but the admin's and the graced one.
	got := usageIDs(h.orgUsage(admin, "?status=active&unused_since=30d"))
	if !strings.Contains(got, unused.Key.ID) || !strings.Contains(got, k.abrupt.Key.ID) || strings.Contains(got, k.graced.Key.ID) || strings.Contains(got, adminID) {
		t.Errorf("active keys unused in 30 days: %s; want %s and %s, not %s nor the admin's", got, unused.Key.ID, k.abrupt.Key.ID, k.graced.Key.ID)
	}
	if got := usageIDs(h.orgUsage(admin, "?status=active&unused_since="+time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))); strings.Contains(got, k.graced.Key.ID) {
		t.Errorf("unused_since an hour ago lists %s, used a moment ago", got)
	}
	// Paged like the listing: one key a page, every key once.
	var seen []string
	cursor := ""
	for range 10 {
		page := h.orgUsage(admin, "?limit=1&status=all&cursor="+cursor)
		seen = append(seen, usageIDs(page))
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if got, want := len(strings.Split(strings.Trim(strings.Join(seen, ","), ","), ",")), 5; got != want {
		t.Errorf("pages of one key: %v, want %d keys in all", seen, want)
	}
}

// sharedOutcomes gives an instance outcomes shared through env's NATS,
// flushed every 50ms.
func sharedOutcomes(t *testing.T, env *natstest.Env) func(*khttp.Server) {
	return func(s *khttp.Server) {
		store, err := events.OpenOutcomes(context.Background(), env.JS, 1, 0, natstest.Quiet())
		if err != nil {
			t.Fatal(err)
		}
		s.Outcomes = usage.NewOutcomes()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); s.Outcomes.Run(ctx, store, 50*time.Millisecond, natstest.Quiet()) }()
		t.Cleanup(func() { cancel(); <-done })
	}
}

func TestUsageMergesVerificationsOfTwoInstances(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	a, b := instance(t, env, sharedOutcomes(t, env)), instance(t, env, sharedOutcomes(t, env))
	admin := a.bootstrap("acme")
	k := a.create("acme", admin, map[string]any{"name": "shared"})
	deadline := time.Now().Add(10 * time.Second)
	for b.verify(k.Secret).Code != domain.VerifyValid && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // B learns the key
	}
	for range 2 {
		a.verifyAs(k.Secret, "on-a")
	}
	b.verifyAs(k.Secret, "on-b") // and the one above: 2 on B, by two callers
	want := countsJSON{Valid: 4}
	for _, h := range []*harness{a, b} {
		var u keyUsageJSON
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if u = h.keyUsage("acme", k.Key.ID, admin, "?window=24h&step=1h"); u.Totals == want && len(u.Callers) == 3 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if u.Totals != want || len(u.Callers) != 3 {
			t.Errorf("%s: totals %+v and callers %+v, want %+v from both instances", h.srv.URL, u.Totals, u.Callers, want)
		}
	}
	// Settled: nothing is counted twice.
	time.Sleep(300 * time.Millisecond)
	if got := a.keyUsage("acme", k.Key.ID, admin, "").Totals; got != want {
		t.Errorf("A settles at %+v, want %+v", got, want)
	}

	a.stop()
	b.stop()
	env.Stop()
	searchOutcomeFiles(t, dir, k.Key.ID, []string{k.Secret, admin})
}

// searchOutcomeFiles fails if any file of the outcome stream or its rollup
// holds a secret, the random part of one, or its hash; control is a string
// that must be found, which proves the files searchable as plain bytes.
func searchOutcomeFiles(t *testing.T, dir, control string, secrets []string) {
	t.Helper()
	files, found := 0, 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.Contains(path, events.OutcomeStream) {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(raw, []byte(control)) {
			found++
		}
		for _, s := range secrets {
			_, random, _ := strings.Cut(s, "_")
			if bytes.Contains(raw, []byte(random[:20])) || bytes.Contains(raw, []byte(domain.HashSecret(s))) {
				t.Errorf("%s holds a secret or its hash", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 || found == 0 {
		t.Fatalf("searched %d files of %s and found the key id in %d: the search would not see a secret either", files, events.OutcomeStream, found)
	}
	t.Logf("searched %d files of %s", files, fmt.Sprint(events.OutcomeStream, "*"))
}

// usageTour drives the usage routes through the conformance check.
func usageTour(t *testing.T, c *conformance) {
	h := start(t)
	cl := c.client(t, h)
	admin := h.bootstrap("acme")
	other := h.bootstrap("globex")
	k := makeOutcomeKeys(h, admin)
	h.verify(k.gracedOld)
	h.verify(k.revokedOld)
	path := "/v1/orgs/acme/keys/" + k.graced.Key.ID + "/usage"
	for _, q := range []string{"", "?window=24h&step=1m", "?window=7d", "?window=90d&step=1d"} {
		cl.do(http.StatusOK, "GET", path+q, admin, nil)
	}
	for _, q := range []string{"", "?presented=revoked", "?status=active&unused_since=30d&limit=1", "?unused_since=2026-01-01T00:00:00Z"} {
		cl.do(http.StatusOK, "GET", "/v1/orgs/acme/usage"+q, admin, nil)
	}
	cl.do(http.StatusBadRequest, "GET", path+"?window=90d&step=1m", admin, nil)
	cl.broken(http.StatusBadRequest, "GET", "/v1/orgs/acme/usage?presented=x", admin, nil)
	cl.broken(http.StatusUnauthorized, "GET", path, "", nil)
	cl.broken(http.StatusUnauthorized, "GET", "/v1/orgs/acme/usage", "", nil)
	cl.do(http.StatusForbidden, "GET", path, other, nil)
	cl.do(http.StatusForbidden, "GET", "/v1/orgs/acme/usage", other, nil)
	cl.do(http.StatusNotFound, "GET", "/v1/orgs/acme/keys/"+domain.NewKeyID()+"/usage", admin, nil)
}
