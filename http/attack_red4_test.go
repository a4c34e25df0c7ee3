package http_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// TestAttackLeakReportsEscapeTheWriteLimit: a manager key of its own org
// (any org: signing up is enough) reports its own key's secret at 60
// different URLs. Each report appends a KeyLeakReported, also after the key
// is revoked, and nothing limits the rate: creates and rotations are
// limited per credential (WriteLimit), leak reports are not, so one
// credential appends to the shared stream without bound, and each report
// rebuilds the key's whole (growing) history, checking every signature.
func TestAttackLeakReportsEscapeTheWriteLimit(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.WriteLimit = khttp.Limit{Per: 10, Every: time.Minute} })
	admin := h.bootstrap("evil")
	k := h.create("evil", admin, map[string]any{"name": "mine"})
	before := h.env.LastSeq(t)
	limited := 0
	var first, last time.Duration
	const n = 60
	for i := range n {
		start := time.Now()
		res := h.request("POST", "/v1/leaks", admin, map[string]string{"token": k.Secret, "url": fmt.Sprintf("https://x.example/%d", i)})
		took := time.Since(start)
		if i == 0 {
			first = took
		}
		last = took
		if res.StatusCode == http.StatusTooManyRequests {
			limited++
		} else if res.StatusCode != http.StatusOK {
			t.Fatalf("report %d: %d %s", i, res.StatusCode, res.body)
		}
	}
	appended := h.env.LastSeq(t) - before
	t.Logf("%d reports: %d events appended, %d refused 429; first report %s, last %s", n, appended, limited, first, last)
	if appended > 20 {
		t.Errorf("one credential appended %d events through POST /v1/leaks in seconds (write limit 10/min; %d refused): leak reports are not rate limited", appended, limited)
	}
}

// TestAttackLeakByKeyIDWithoutToken: a manager of another org names the
// victim's key by id (key_id, org_id fields), by its masked form, or by
// its hash, instead of the secret: nothing is recorded or revoked.
func TestAttackLeakByKeyIDWithoutToken(t *testing.T) {
	h := start(t)
	victimAdmin := h.bootstrap("acme")
	evil := h.bootstrap("evil")
	victim := h.create("acme", victimAdmin, map[string]any{"name": "victim"})
	before := h.env.LastSeq(t)
	fake, _ := domain.GenerateSecret("c8k", nil)
	for _, body := range []map[string]string{
		{"token": fake, "key_id": victim.Key.ID, "org_id": "acme"},
		{"token": victim.Key.Masked},
		{"token": domain.HashSecret(victim.Secret)},
		{"token": victim.Key.ID},
		{"token": " " + victim.Secret[:len(victim.Secret)-1]},
	} {
		res := h.request("POST", "/v1/leaks", evil, body)
		if res.StatusCode == http.StatusOK && strings.Contains(string(res.body), "true_positive") {
			t.Errorf("report %v: %s", body, res.body)
		}
	}
	if h.env.LastSeq(t) != before || h.verify(victim.Secret).Code != "VALID" {
		t.Error("a report without the victim's secret changed the victim's key")
	}
}

// TestAttackGitHubBodyLimitWithoutTheRoute: with no GitHub keys configured
// the route does not exist, yet bodyLimit lets an unauthenticated client
// send 8 MiB (not 64 KiB) to its path, read whole into memory before any
// slot or check, 64 at once per address.
func TestAttackGitHubBodyLimitWithoutTheRoute(t *testing.T) {
	h := start(t)
	body := bytes.Repeat([]byte(" "), 4<<20)
	res := h.request("POST", "/v1/secret-scanning/github", "", body, "Content-Type", "application/json")
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("a 4 MiB body to the GitHub path, no GitHub keys configured: %d %s, want 413 (read whole, past the 64 KiB bound)", res.StatusCode, res.body)
	}
	// Configured, a request without the signature headers is still read
	// whole (8 MiB) before anything looks at its headers.
	g := newGitHub(t)
	h2 := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	res = h2.request("POST", "/v1/secret-scanning/github", "", body, "Content-Type", "application/json")
	t.Logf("configured, unsigned 4 MiB body: %d %.100s", res.StatusCode, res.body)
}

// TestAttackGitHubKeysUnreachableFetchFlood: GitHub's key endpoint fails
// (down, or answering 403 for its rate limit of unauthenticated calls).
// Until a first fetch succeeds, every unauthenticated request with any
// identifier fetches the keys again: the once-a-minute bound applies only
// once keys are known, and the 503 is not a failed authentication, so the
// address limit never stops it either.
func TestAttackGitHubKeysUnreachableFetchFlood(t *testing.T) {
	var fetches atomic.Int32
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		http.Error(w, "rate limited", http.StatusForbidden)
	}))
	t.Cleanup(down.Close)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.GitHubKeys = &khttp.GitHubKeys{URL: down.URL}
		s.AuthFailureLimit = khttp.Limit{Per: 5, Every: time.Minute}
	})
	codes := map[int]int{}
	for i := range 30 {
		res := h.request("POST", "/v1/secret-scanning/github", "", `[]`, "Content-Type", "application/json",
			"Github-Public-Key-Identifier", fmt.Sprintf("made-up-%d", i), "Github-Public-Key-Signature", "AAAA")
		codes[res.StatusCode]++
	}
	t.Logf("answers %v, outbound fetches %d", codes, fetches.Load())
	if n := fetches.Load(); n > 2 {
		t.Errorf("30 unauthenticated requests made keyledger fetch GitHub's keys %d times (want at most once a minute, whether or not a fetch succeeded)", n)
	}
}

// TestAttackGitHubOneTokenManyURLs: one signed report holding one live
// token 1,000 times, each at another URL (an attacker who pushes a key of
// its own to 1,000 public places; or GitHub's own report). Every entry
// rebuilds the key's whole history, which each one grows: quadratic work.
// The report should still be answered within seconds and revoke once.
func TestAttackGitHubOneTokenManyURLs(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "target"})
	var tokens []token
	for i := range 1000 {
		tokens = append(tokens, token{k.Secret, "keyledger_api_key", fmt.Sprintf("https://github.com/o/r/blob/c/f%d", i), "content"})
	}
	before := h.env.LastSeq(t)
	start := time.Now()
	res, fb := g.report(h, tokens, "", nil)
	took := time.Since(start)
	appended := h.env.LastSeq(t) - before
	t.Logf("1,000 entries of one token: %d in %s, %d feedback, %d events appended", res.StatusCode, took, len(fb), appended)
	// Now: the token is decided once for the whole report, and a key
	// records at most domain.MaxLeaksPerKey places.
	if v := h.verify(k.Secret); v.Code != "REVOKED" || appended != domain.MaxLeaksPerKey+1 {
		t.Errorf("the key verifies %s after %d events, want REVOKED after %d (the leaks a key records, and one revocation)", v.Code, appended, domain.MaxLeaksPerKey+1)
	}
	var page struct {
		Events []eventView
		More   bool
	}
	h.must(http.StatusOK, "GET", fmt.Sprintf("/v1/orgs/acme/keys/%s/events?limit=1000", k.Key.ID), admin, nil).json(t, &page)
	revokes := 0
	for _, e := range page.Events {
		if e.Type == "KeyRevoked" {
			revokes++
		}
	}
	if revokes != 1 {
		t.Errorf("%d revocations, want 1", revokes)
	}
	if took > 5*time.Second {
		t.Errorf("one report of 1,000 entries of one token took %s (each rebuilds the key's growing history: quadratic)", took)
	}
}

// TestAttackGitHubSignatureMalleability: the signature covers the raw
// bytes: the signed body with whitespace added, a duplicate key, or a
// second document appended does not verify; the signed empty array does,
// and changes nothing.
func TestAttackGitHubSignatureMalleability(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "target"})
	signed := `[{"token":"c8k_x","type":"t","url":"u","source":"s"}]`
	hdr := g.sign(signed)
	before := h.env.LastSeq(t)
	for name, body := range map[string]string{
		"Space":     signed + " ",
		"Duplicate": `[{"token":"c8k_x","type":"t","url":"u","source":"s","token":"` + k.Secret + `"}]`,
		"Appended":  signed + `[{"token":"` + k.Secret + `"}]`,
		"Empty":     "",
	} {
		res := h.request("POST", "/v1/secret-scanning/github", "", body, append([]string{"Content-Type", "application/json"}, hdr...)...)
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d %s, want 401", name, res.StatusCode, res.body)
		}
	}
	// A valid signature over bytes that are not base64-canonical: padding off.
	sum := sha256.Sum256([]byte(signed))
	sig, _ := ecdsa.SignASN1(rand.Reader, g.priv, sum[:])
	raw := base64.RawStdEncoding.EncodeToString(sig)
	res := h.request("POST", "/v1/secret-scanning/github", "", signed, "Content-Type", "application/json", "Github-Public-Key-Identifier", g.id, "Github-Public-Key-Signature", raw)
	t.Logf("unpadded base64 signature: %d", res.StatusCode)
	if h.env.LastSeq(t) != before || h.verify(k.Secret).Code != "VALID" {
		t.Error("an altered report changed something")
	}
}

// TestAttackLeakTokensNotLogged: the secrets reported, through either
// route, appear in no log line, at debug level, whatever the outcome
// (true positive, false positive, malformed, an error).
func TestAttackLeakTokensNotLogged(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	admin := h.bootstrap("acme")
	live := h.create("acme", admin, map[string]any{"name": "live"}).Secret
	live2 := h.create("acme", admin, map[string]any{"name": "live2"}).Secret
	stranger, _ := domain.GenerateSecret("c8k", nil)
	h.request("POST", "/v1/leaks", admin, map[string]string{"token": live, "url": "https://x/" + live, "source": live})
	h.request("POST", "/v1/leaks", admin, map[string]string{"token": stranger})
	h.request("POST", "/v1/leaks", admin, `{"token":"`+stranger+`",`) // malformed
	h.request("POST", "/v1/leaks?token="+stranger, admin, map[string]string{"token": stranger})
	g.report(h, []token{{live2, "t", "u", "s"}, {stranger, "t", "u", "s"}}, "", nil)
	g.report(h, []token{{live2, "t", "u", "s"}}, "unknown-id", nil)
	logs := h.logs.String()
	for name, s := range map[string]string{"live": live, "live2": live2, "stranger": stranger} {
		if strings.Contains(logs, s) || strings.Contains(logs, s[4:20]) {
			i := strings.Index(logs, s[4:20])
			t.Errorf("the %s token is in the logs: %.300s", name, logs[max(0, i-200):])
		}
	}
	// What /v1/leaks tells its caller about a token it holds.
	var out map[string]any
	res := h.request("POST", "/v1/leaks", admin, map[string]string{"token": live})
	_ = json.Unmarshal(res.body, &out)
	t.Logf("answer to a report of a revoked key's token: %v", out)
}
