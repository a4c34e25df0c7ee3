package http_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// gitHub plays GitHub's side of the secret scanning partner program as
// GitHub documents it: a P-256 key whose public half it serves from a
// key endpoint (the JSON of api.github.com/meta/public_keys/secret_scanning),
// and reports signed with it (ECDSA over SHA-256 of the body, base64 of
// ASN.1, in Github-Public-Key-Signature).
type gitHub struct {
	t       *testing.T
	id      string
	priv    *ecdsa.PrivateKey
	keys    *httptest.Server
	fetches atomic.Int32
}

func newGitHub(t *testing.T) *gitHub {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	g := &gitHub{t: t, id: hex.EncodeToString(make([]byte, 32)), priv: priv}
	der, _ := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	list, _ := json.Marshal(map[string]any{"public_keys": []map[string]any{{
		"key_identifier": g.id, "key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "is_current": true,
	}}})
	g.keys = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(list)
	}))
	t.Cleanup(g.keys.Close)
	return g
}

type token struct{ Token, Type, URL, Source string }

// sign returns the signature headers of body, as GitHub sends them.
func (g *gitHub) sign(body string) []string {
	sum := sha256.Sum256([]byte(body))
	sig, err := ecdsa.SignASN1(rand.Reader, g.priv, sum[:])
	if err != nil {
		g.t.Fatal(err)
	}
	return []string{"Github-Public-Key-Identifier", g.id, "Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig)}
}

// report sends tokens as GitHub would, signed with key (g.priv when nil)
// under the identifier id (g.id when "").
func (g *gitHub) report(h *harness, tokens []token, id string, key *ecdsa.PrivateKey) (response, []map[string]string) {
	g.t.Helper()
	entries := make([]map[string]string, len(tokens))
	for i, t := range tokens {
		entries[i] = map[string]string{"token": t.Token, "type": t.Type, "url": t.URL, "source": t.Source}
	}
	body, _ := json.Marshal(entries)
	if id == "" {
		id = g.id
	}
	if key == nil {
		key = g.priv
	}
	sum := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, key, sum[:])
	if err != nil {
		g.t.Fatal(err)
	}
	res := h.request("POST", "/v1/secret-scanning/github", "", body,
		"Content-Type", "application/json", "Github-Public-Key-Identifier", id, "Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig))
	var feedback []map[string]string
	if res.StatusCode == http.StatusOK {
		res.json(g.t, &feedback)
	}
	return res, feedback
}

func tokenHash(s string) string { sum := sha256.Sum256([]byte(s)); return hex.EncodeToString(sum[:]) }

// TestGitHubSecretScanningRevokesALeakedKey runs the partner protocol
// through the real stack: a signed report of a live key revokes it at once,
// with a KeyLeakReported (the URL, the source, GitHub secret scanning as
// the actor) before the KeyRevoked, and the feedback says true_positive; a
// token of no key, or not of the key format, is false_positive and changes
// nothing; a token of a key revoked already, or a replaced value past its
// grace period, is recorded and true_positive, revoking nothing more; a
// replay of the report appends nothing.
func TestGitHubSecretScanningRevokesALeakedKey(t *testing.T) {
	g := newGitHub(t)
	dir := t.TempDir()
	h := startWith(t, dir, func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	admin := h.bootstrap("acme")
	leaked := h.create("acme", admin, map[string]any{"name": "billing worker"})
	defer func() { // the reported secrets rest nowhere: only their hashes and masked forms
		_ = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
			if err == nil && !info.IsDir() {
				if raw, _ := os.ReadFile(path); strings.Contains(string(raw), leaked.Secret) {
					t.Errorf("%s holds the reported secret", path)
				}
			}
			return nil
		})
	}()
	gone := h.create("acme", admin, map[string]any{"name": "old"})
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+gone.Key.ID, admin, nil)
	stranger, _ := domain.GenerateSecret("c8k", nil)
	url := "https://github.com/octo/app/blob/abc123/.env"
	tokens := []token{
		{leaked.Secret, "keyledger_api_key", url, "content"},
		{stranger, "keyledger_api_key", "https://github.com/octo/app/blob/abc123/x", "content"},
		{"c8k_not-a-key", "keyledger_api_key", "https://github.com/octo/app/issues/1", "issue"},
		{gone.Secret, "keyledger_api_key", "https://gist.github.com/octo/1", "gist"},
	}
	before := h.env.LastSeq(t)
	res, feedback := g.report(h, tokens, "", nil)
	if res.StatusCode != http.StatusOK || len(feedback) != len(tokens) {
		t.Fatalf("the report: %d %s", res.StatusCode, res.body)
	}
	for i, want := range []string{"true_positive", "false_positive", "false_positive", "true_positive"} {
		if f := feedback[i]; f["label"] != want || f["token_hash"] != tokenHash(tokens[i].Token) || f["token_type"] != "keyledger_api_key" {
			t.Errorf("feedback %d: %v, want %s", i, f, want)
		}
	}
	if v := h.verify(leaked.Secret); v.Code != "REVOKED" {
		t.Errorf("the leaked key verifies %s, want REVOKED", v.Code)
	}
	hist := h.history("acme", leaked.Key.ID, admin)
	last2 := hist[len(hist)-2:]
	if last2[0].Type != "KeyLeakReported" || last2[1].Type != "KeyRevoked" || last2[0].Actor.ID != "secret-scanning" || last2[0].Actor.Name != "GitHub secret scanning" {
		t.Fatalf("the leaked key's history ends %+v", last2)
	}
	var d struct{ URL, Source, Reporter, Masked string }
	_ = json.Unmarshal(last2[0].Data, &d)
	if d.URL != url || d.Source != "content" || d.Reporter != "github" || d.Masked != domain.MaskSecret(leaked.Secret) {
		t.Errorf("the leak's data: %+v", d)
	}
	goneHist := h.history("acme", gone.Key.ID, admin)
	if n := len(goneHist); goneHist[n-1].Type != "KeyLeakReported" || goneHist[n-2].Type != "KeyRevoked" {
		t.Errorf("a revoked key's leak: history ends %s, %s", goneHist[n-2].Type, goneHist[n-1].Type)
	}
	if got := h.env.LastSeq(t) - before; got != 3 {
		t.Errorf("the report appended %d events, want 3 (leak and revocation, leak of a revoked key)", got)
	}

	// The same report again: the same feedback, nothing appended.
	before = h.env.LastSeq(t)
	if res, again := g.report(h, tokens, "", nil); res.StatusCode != http.StatusOK || fmt.Sprint(again) != fmt.Sprint(feedback) || h.env.LastSeq(t) != before {
		t.Errorf("a replayed report: %d %v, appended %d", res.StatusCode, again, h.env.LastSeq(t)-before)
	}
}

// TestGitHubSecretScanningRefusesUnsignedReports: a report without the
// signature headers, signed by another key, under an identifier GitHub
// does not publish, or altered after signing, is 401 and changes nothing;
// an unknown identifier makes the keys be fetched again, at most once a
// minute.
func TestGitHubSecretScanningRefusesUnsignedReports(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "target"})
	tokens := []token{{k.Secret, "keyledger_api_key", "https://github.com/x", "content"}}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	before := h.env.LastSeq(t)
	body, _ := json.Marshal([]map[string]string{{"token": k.Secret, "type": "t", "url": "u", "source": "s"}})
	for name, res := range map[string]response{
		"NoSignature":   h.request("POST", "/v1/secret-scanning/github", "", body, "Content-Type", "application/json"),
		"AnotherKey":    func() response { r, _ := g.report(h, tokens, "", other); return r }(),
		"UnknownKeyID":  func() response { r, _ := g.report(h, tokens, "deadbeef", nil); return r }(),
		"UnknownKeyID2": func() response { r, _ := g.report(h, tokens, "deadbeef2", nil); return r }(),
		"Altered": func() response {
			sum := sha256.Sum256(body)
			sig, _ := ecdsa.SignASN1(rand.Reader, g.priv, sum[:])
			altered, _ := json.Marshal([]map[string]string{{"token": k.Secret, "type": "t", "url": "elsewhere", "source": "s"}})
			return h.request("POST", "/v1/secret-scanning/github", "", altered, "Content-Type", "application/json",
				"Github-Public-Key-Identifier", g.id, "Github-Public-Key-Signature", base64.StdEncoding.EncodeToString(sig))
		}(),
	} {
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %d %s, want 401", name, res.StatusCode, res.body)
		}
	}
	if h.env.LastSeq(t) != before || h.verify(k.Secret).Code != "VALID" {
		t.Error("a refused report changed something")
	}
	if n := g.fetches.Load(); n != 1 {
		t.Errorf("the keys were fetched %d times, want once (unknown identifiers refetch at most once a minute)", n)
	}
}

// TestGitHubSecretScanningTenThousandTokens: one report of 10,000 tokens,
// 50 of them live keys (one twice), the rest of no key: every token gets
// its feedback, in order, each live key is revoked once, and nothing else
// is appended.
func TestGitHubSecretScanningTenThousandTokens(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL} })
	admin := h.bootstrap("acme", domain.ScopeManage)
	var tokens []token
	live := map[int]string{}
	for i := range 50 {
		live[i*200] = h.create("acme", admin, map[string]any{"name": fmt.Sprintf("k%d", i)}).Secret
	}
	for i := range 10000 {
		s, ok := live[i]
		if !ok {
			s, _ = domain.GenerateSecret("c8k", nil)
		}
		if i == 9999 {
			s = live[0] // the first key once more
		}
		tokens = append(tokens, token{s, "keyledger_api_key", fmt.Sprintf("https://github.com/o/r/blob/c/f%d", i%7), "content"})
	}
	before := h.env.LastSeq(t)
	res, feedback := g.report(h, tokens, "", nil)
	if res.StatusCode != http.StatusOK || len(feedback) != len(tokens) {
		t.Fatalf("a report of 10,000 tokens: %d, %d answers: %.300s", res.StatusCode, len(feedback), res.body)
	}
	positives := 0
	for i, f := range feedback {
		_, isLive := live[i]
		isLive = isLive || i == 9999
		if (f["label"] == "true_positive") != isLive || f["token_hash"] != tokenHash(tokens[i].Token) {
			t.Fatalf("feedback %d: %v (live %v)", i, f, isLive)
		}
		if isLive {
			positives++
		}
	}
	// 50 keys: a leak and a revocation each; the repeated token, at another
	// URL, one more leak.
	if got := h.env.LastSeq(t) - before; got != 2*50+1 {
		t.Errorf("appended %d events, want %d", got, 2*50+1)
	}
	for _, s := range live {
		if v := h.verify(s); v.Code != "REVOKED" {
			t.Errorf("a reported live key verifies %s", v.Code)
		}
	}
}

// TestLeakActionNotifyRecordsOnly: with --leak-action notify a reported
// live key is recorded, and keeps working until its managers decide.
func TestLeakActionNotifyRecordsOnly(t *testing.T) {
	g := newGitHub(t)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.GitHubKeys = &khttp.GitHubKeys{URL: g.keys.URL}
		s.LeakAction = khttp.LeakNotify
	})
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "target"})
	if _, fb := g.report(h, []token{{k.Secret, "t", "https://github.com/x", "content"}}, "", nil); len(fb) != 1 || fb[0]["label"] != "true_positive" {
		t.Fatalf("feedback %v", fb)
	}
	hist := h.history("acme", k.Key.ID, admin)
	if hist[len(hist)-1].Type != "KeyLeakReported" || h.verify(k.Secret).Code != "VALID" {
		t.Errorf("notify: history ends %s, the key verifies %s", hist[len(hist)-1].Type, h.verify(k.Secret).Code)
	}
}

// TestReportLeaksEndpoint: POST /v1/leaks takes a key holding leaks:report
// (of any org: the secret is the proof) or a manager; a key without the
// scope is 403, no credential 401, and neither appends anything.
func TestReportLeaksEndpoint(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	globex := h.bootstrap("globex", domain.ScopeManage, domain.ScopeLeaksReport)
	scanner := h.create("globex", globex, map[string]any{"name": "scanner", "scopes": []string{domain.ScopeLeaksReport}}).Secret
	plain := h.create("acme", admin, map[string]any{"name": "plain"}).Secret
	target := h.create("acme", admin, map[string]any{"name": "target"})
	before := h.env.LastSeq(t)
	body := map[string]string{"token": target.Secret, "url": "https://pastebin.example/x", "source": "paste"}
	if res := h.request("POST", "/v1/leaks", "", body); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("no credential: %d", res.StatusCode)
	}
	if res := h.request("POST", "/v1/leaks", plain, body); res.StatusCode != http.StatusForbidden {
		t.Errorf("a key without leaks:report: %d %s", res.StatusCode, res.body)
	}
	if h.env.LastSeq(t) != before {
		t.Fatal("a refused report appended events")
	}
	var out struct {
		Label, KeyID, OrgID string `json:",omitempty"`
		Revoked             bool
	}
	res := h.must(http.StatusOK, "POST", "/v1/leaks", scanner, body)
	res.json(t, &out)
	if out.Label != "true_positive" || !out.Revoked || h.verify(target.Secret).Code != "REVOKED" {
		t.Errorf("a scanner's report: %s", res.body)
	}
	hist := h.history("acme", target.Key.ID, admin)
	if leak := hist[len(hist)-2]; leak.Type != "KeyLeakReported" || leak.Actor.Kind != "key" || leak.Actor.ID == "" {
		t.Errorf("the leak event: %+v", leak)
	}
	h.must(http.StatusOK, "POST", "/v1/leaks", admin, map[string]string{"token": "c8k_nothing"})
}

// TestLeakReachesTheEventStream: the org's SSE feed carries the
// KeyLeakReported, then the KeyRevoked, and ?types=KeyLeakReported keeps
// only the first.
func TestLeakReachesTheEventStream(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "target"})
	all := h.openStream("/v1/orgs/acme/events/stream?after_seq="+fmt.Sprint(h.env.LastSeq(t)), admin)
	leaks := h.openStream("/v1/orgs/acme/events/stream?types=KeyLeakReported&after_seq="+fmt.Sprint(h.env.LastSeq(t)), admin)
	h.must(http.StatusOK, "POST", "/v1/leaks", admin, map[string]string{"token": k.Secret, "url": "https://github.com/o/r"})
	for _, want := range []string{"KeyLeakReported", "KeyRevoked"} {
		select {
		case e := <-all.events:
			if e.event != want {
				t.Errorf("the stream sent %s, want %s", e.event, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s on the stream", want)
		}
	}
	select {
	case e := <-leaks.events:
		if e.event != "KeyLeakReported" {
			t.Errorf("the filtered stream sent %s", e.event)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no KeyLeakReported on the filtered stream")
	}
}
