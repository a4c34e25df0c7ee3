package http_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/keyledger/keyledger/events"
)

// Red team 3: attacks on the sign-in with the identity provider
// (http/sso.go). Each test asserts the secure behaviour: it fails while
// the hole is open.

// toCallback signs user in at the provider, starting at start, and stops
// before keyledger's callback: it returns the browser and the callback URL.
func toCallback(t *testing.T, p *provider, keyledger, start, user string) (*webAgent, *url.URL) {
	t.Helper()
	b := newWebAgent(t)
	var cb *url.URL
	b.client.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == "/auth/callback" && r.URL.Host == mustURL(keyledger).Host {
			cb = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	b.signIn(p, start, user)
	if cb == nil || cb.Query().Get("code") == "" {
		t.Fatalf("no callback for %s", start)
	}
	return b, cb
}

// noFollow answers req without following a redirect, with the browser's
// cookies, and keeps the cookies set. It goes to the transport itself: the
// client refuses a Location it cannot parse, a browser does not.
func (b *webAgent) noFollow(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	for _, c := range b.client.Jar.Cookies(req.URL) {
		req.AddCookie(c)
	}
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	b.client.Jar.SetCookies(req.URL, res.Cookies())
	return res, string(body)
}

// browserHost is the host a browser goes to for a Location header given
// on base, parsed as the WHATWG URL standard does: tabs and newlines are
// removed and, for http(s), a backslash is a slash.
func browserHost(base *url.URL, loc string) string {
	loc = strings.NewReplacer("\t", "", "\n", "", "\r", "").Replace(loc)
	loc = strings.ReplaceAll(loc, `\`, "/")
	u, err := base.Parse(loc)
	if err != nil {
		return "unparseable: " + err.Error()
	}
	return u.Host
}

// TestAttackOpenRedirectAfterSignIn: ?next= on /auth/login is where the
// callback sends the browser. safeNext refuses "//x" and "/\x", but
// http.Redirect then cleans the path ("/./\x" becomes "/\x"), and a tab
// (which browsers drop from URLs) splits "//".
func TestAttackOpenRedirectAfterSignIn(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	base := mustURL(h.srv.URL)
	for _, next := range []string{
		"//evil.example", `/\evil.example`, // the ones safeNext knows
		`/./\evil.example`, "/\t/evil.example", "/\t\\evil.example", `/a/../\evil.example`,
	} {
		b, cb := toCallback(t, p, h.srv.URL, h.srv.URL+"/auth/login?next="+url.QueryEscape(next), "test-user@127.0.0.1")
		req, _ := http.NewRequest("GET", cb.String(), nil)
		res, _ := b.noFollow(req)
		loc := res.Header.Get("Location")
		if host := browserHost(base, loc); res.StatusCode != http.StatusFound || host != base.Host {
			t.Errorf("next=%q: %d, Location %q takes a browser to %q, want %s", next, res.StatusCode, loc, host, base.Host)
		}
	}
}

// TestAttackForcedLoginCancelsSignInUnderWay: a cross-site page makes the
// victim's browser navigate to /auth/login (a top-level GET: the Lax
// cookie rules let it set the binding cookie). The new binding cookie
// replaces the one of the victim's sign-in under way, which then fails —
// what the callback's own comment says a forged link must not do.
func TestAttackForcedLoginCancelsSignInUnderWay(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	victim, cb := toCallback(t, p, h.srv.URL, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1")
	forced, _ := http.NewRequest("GET", h.srv.URL+"/auth/login", nil)
	victim.noFollow(forced) // the attacker's link, opened in the victim's browser
	victim.client.CheckRedirect = nil
	if res, body := victim.get(cb.String()); res.StatusCode != 200 || res.Request.URL.Path != "/acme/configuration/api-keys" {
		t.Errorf("the victim's own sign-in after a forced /auth/login: %d at %s %s, want it to finish", res.StatusCode, res.Request.URL, body)
	}
}

// TestAttackLoginCSRFWithAttackersCallback: the attacker signs in as
// themself and has the victim's browser (with a sign-in of its own under
// way) open the attacker's callback: the victim must not end up signed in
// as the attacker, and the victim's own sign-in must still finish.
func TestAttackLoginCSRFWithAttackersCallback(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	_, attackers := toCallback(t, p, h.srv.URL, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user2")
	victim, own := toCallback(t, p, h.srv.URL, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1")
	req, _ := http.NewRequest("GET", attackers.String(), nil)
	if res, body := victim.noFollow(req); res.StatusCode != 401 || strings.Contains(res.Header.Get("Set-Cookie"), "keyledger_session=") {
		t.Errorf("the attacker's callback in the victim's browser: %d %v %s, want 401 and no session", res.StatusCode, res.Header["Set-Cookie"], body)
	}
	_, body := victim.get(h.srv.URL + "/v1/session")
	if strings.Contains(body, `"signed_in":true`) {
		t.Errorf("the victim is signed in with the attacker's callback: %s", body)
	}
	victim.client.CheckRedirect = nil
	if res, _ := victim.get(own.String()); res.StatusCode != 200 {
		t.Errorf("the victim's own sign-in after the attacker's callback: %d", res.StatusCode)
	}
	_, body = victim.get(h.srv.URL + "/v1/session")
	if !strings.Contains(body, `"subject":"id1"`) {
		t.Errorf("the victim's session: %s, want id1's", body)
	}
}

// signedIn signs a manager in and returns the browser and its CSRF token.
func signedIn(t *testing.T, p *provider, h *harness, user string) (*webAgent, string) {
	t.Helper()
	b := newWebAgent(t)
	if res, _ := b.signIn(p, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", user); res.StatusCode != 200 {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	_, body := b.get(h.srv.URL + "/v1/session")
	var who struct {
		CSRF string `json:"csrf_token"`
	}
	if json.Unmarshal([]byte(body), &who) != nil || who.CSRF == "" {
		t.Fatalf("/v1/session: %s", body)
	}
	return b, who.CSRF
}

// TestAttackCSRFOriginVariants: a change made with the cookie and the right
// CSRF token, but from an origin that is not exactly PublicURL's, or with
// only a Referer; sign-out from another site.
func TestAttackCSRFOriginVariants(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	ada, csrf := signedIn(t, p, h, "test-user@127.0.0.1")
	u := mustURL(h.srv.URL)
	hostOnly := u.Hostname()
	for name, hdr := range map[string]map[string]string{
		"NullOrigin":     {"Origin": "null"},
		"OtherPort":      {"Origin": "http://" + hostOnly + ":1"},
		"OtherScheme":    {"Origin": "https://" + u.Host},
		"TrailingSlash":  {"Origin": h.srv.URL + "/"},
		"LocalhostAlias": {"Origin": "http://localhost:" + u.Port()},
		"RefererOnly":    {"Referer": h.srv.URL + "/acme/configuration/api-keys"},
		"SuffixOrigin":   {"Origin": h.srv.URL + ".evil.example"},
	} {
		before := h.env.LastSeq(t)
		req, _ := http.NewRequest("POST", h.srv.URL+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"csrf"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-CSRF-Token", csrf)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		if res, body := ada.do(req); res.StatusCode != 403 || h.env.LastSeq(t) != before {
			t.Errorf("%s: %d %s, want 403 and nothing appended", name, res.StatusCode, body)
		}
	}
	// Sign-out from another site, with a guessed or no token.
	for name, c := range map[string][2]string{"ForeignOrigin": {"https://evil.example", csrf}, "NoToken": {h.srv.URL, ""}, "NoOrigin": {"", csrf}} {
		req := newRequestForm(t, h.srv.URL+"/auth/logout", c[0], c[1])
		if c[0] == "" {
			req.Header.Del("Origin")
		}
		if res, body := ada.noFollow(req); res.StatusCode != 403 {
			t.Errorf("sign-out %s: %d %s, want 403", name, res.StatusCode, body)
		}
	}
	if _, body := ada.get(h.srv.URL + "/v1/session"); !strings.Contains(body, `"signed_in":true`) {
		t.Errorf("a refused sign-out ended the session: %s", body)
	}
}

// TestAttackCookieWithAuthorizationHeader: a manager's cookie must not
// make up for a bad Authorization header (no fallback to the cookie).
func TestAttackCookieWithAuthorizationHeader(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	ada, _ := signedIn(t, p, h, "test-user@127.0.0.1")
	for _, auth := range []string{"Basic YWRhOmFkYQ==", "Bearer ", "Bearer garbage", "Bearer kl_live_notakey", "bearer"} {
		req, _ := http.NewRequest("GET", h.srv.URL+"/v1/orgs/acme/keys", nil)
		req.Header.Set("Authorization", auth)
		if res, body := ada.do(req); res.StatusCode != 401 {
			t.Errorf("Authorization %q with a manager's cookie: %d %s, want 401", auth, res.StatusCode, body)
		}
	}
}

// TestAttackSignInSecretsInAccessLog: the access log writes each query
// string; the callback's carries the authorization code and the state.
// The package says no token is ever in a log line.
func TestAttackSignInSecretsInAccessLog(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	b, cb := toCallback(t, p, h.srv.URL, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1")
	b.client.CheckRedirect = nil
	if res, _ := b.get(cb.String()); res.StatusCode != 200 {
		t.Fatalf("sign-in: %d", res.StatusCode)
	}
	logs := h.logs.String()
	for _, name := range []string{"code", "state"} {
		if v := cb.Query().Get(name); strings.Contains(logs, v) {
			t.Errorf("the access log holds the callback's %s %q", name, v)
		}
	}
	for _, c := range b.client.Jar.Cookies(mustURL(h.srv.URL)) {
		if strings.Contains(logs, c.Value) {
			t.Errorf("the access log holds the cookie %s", c.Name)
		}
	}
}

// TestAttackProviderErrorReflected: the callback's error= parameter is
// written into the answer: it must stay inert text.
func TestAttackProviderErrorReflected(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	res, body := newWebAgent(t).get(h.srv.URL + "/auth/callback?error=" + url.QueryEscape("<script>alert(1)</script>\u2028\x00"+strings.Repeat("A", 5000)) + "&error_description=x")
	if res.StatusCode != 401 || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") ||
		res.Header.Get("X-Content-Type-Options") != "nosniff" || strings.Contains(body, "<script>") || len(body) > 1000 {
		t.Errorf("callback with error=: %d %s %q (%d bytes)", res.StatusCode, res.Header.Get("Content-Type"), body[:min(len(body), 300)], len(body))
	}
}

// TestAttackCookieAttributes: both cookies HttpOnly and SameSite=Lax, the
// binding on /auth/ only, Secure behind an https PublicURL.
func TestAttackCookieAttributes(t *testing.T) {
	p := startProvider(t)
	h, sso, _ := startSSO(t, p, t.TempDir())
	b, cb := toCallback(t, p, h.srv.URL, h.srv.URL+"/auth/login", "test-user@127.0.0.1")
	req, _ := http.NewRequest("GET", cb.String(), nil)
	res, _ := b.noFollow(req)
	var session *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "keyledger_session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.Domain != "" {
		t.Errorf("the session cookie: %+v", session)
	}
	secure := *sso.PublicURL
	secure.Scheme = "https"
	sso.PublicURL = &secure
	res, _ = newWebAgent(t).noFollow(mustRequest("GET", h.srv.URL+"/auth/login"))
	for _, c := range res.Cookies() {
		if c.Name == "keyledger_signin" && (!c.Secure || !c.HttpOnly || c.Path != "/auth/" || c.SameSite != http.SameSiteLaxMode) {
			t.Errorf("the binding cookie behind https: %+v", c)
		}
	}
}

func mustRequest(method, u string) *http.Request {
	req, _ := http.NewRequest(method, u, nil)
	return req
}

// TestAttackSignInFloodFillsTheBucket: /auth/login needs no credential and
// puts an entry in KEYLEDGER_SESSIONS each time, kept for the bucket's
// 24 hours (the sign-in itself ends after 10 minutes), with a next of any
// length. One client floods it: nothing refuses it, nothing bounds it.
// Now sign-ins are limited per client address (30 a minute), kept in a
// bucket of their own (KEYLEDGER_SIGNINS) for their ten minutes, bounded
// in size, and a next that is not an org's page is dropped.
func TestAttackSignInFloodFillsTheBucket(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	next := "/" + strings.Repeat("a", 256<<10) // 256 KiB, well under the 1 MiB header limit
	const n = 200
	refused := 0
	for i := range n {
		res, err := client.Get(h.srv.URL + "/auth/login?next=" + next)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable {
			refused++
		} else if res.StatusCode != http.StatusFound {
			t.Fatalf("login %d: %d", i, res.StatusCode)
		}
	}
	kv, err := h.env.JS.KeyValue(context.Background(), events.SignInsBucket)
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	info := fmt.Sprintf("%d of %d unauthenticated sign-ins refused; the bucket holds %d entries, %d bytes, each kept %s",
		refused, n, st.Values(), st.Bytes(), st.TTL())
	t.Log(info)
	if refused == 0 || st.Bytes() > 1<<20 || st.TTL() > events.SignInsTTL {
		t.Errorf("one client filled the sign-ins' bucket: %s", info)
	}
	if st, err := h.env.JS.KeyValue(context.Background(), events.SessionsBucket); err == nil {
		if s, _ := st.Status(context.Background()); s != nil && s.Values() != 0 {
			t.Errorf("sign-ins under way hold %d entries in the sessions' bucket", s.Values())
		}
	}
}

// TestAttackIdempotencyReplayAcrossSessions: the shared store seals an
// Idempotency-Key answer (a full key) with the session cookie, so that
// another credential cannot open it; this instance's memory keeps it by
// actor only, and replays it to another session of the same person.
func TestAttackIdempotencyReplayAcrossSessions(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	create := func(b *webAgent, csrf string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", h.srv.URL+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"idem"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", h.srv.URL)
		req.Header.Set("X-CSRF-Token", csrf)
		req.Header.Set("Idempotency-Key", "red3-same-key")
		return b.do(req)
	}
	one, csrf1 := signedIn(t, p, h, "test-user@127.0.0.1")
	res, body := create(one, csrf1)
	if res.StatusCode != 201 {
		t.Fatalf("create: %d %s", res.StatusCode, body)
	}
	two, csrf2 := signedIn(t, p, h, "test-user@127.0.0.1")
	res, body2 := create(two, csrf2)
	if res.StatusCode == 201 && body2 == body {
		t.Errorf("another session of the same person got the first session's answer (and its secret) replayed from memory, while the shared store refuses it (sealed for another credential)")
	}
}

// TestAttackOpenRedirectInChromium confirms the open redirect in a real
// browser: a link to /auth/login?next=/%09/<evil host>/ — the manager
// signs in on the provider's own page, and Chromium, which drops the tab,
// lands on the attacker's site (here another local server, standing in
// for a look-alike sign-in page).
func TestAttackOpenRedirectInChromium(t *testing.T) {
	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `<html><body id="evil">the attacker's page</body></html>`)
	}))
	t.Cleanup(evil.Close)
	b := newBrowser(t, 1024, 768)
	b.do(t,
		chromedp.Navigate(h.srv.URL+"/auth/login?next="+url.QueryEscape("/\t/"+mustURL(evil.URL).Host+"/")),
		chromedp.WaitVisible("#username"),
		chromedp.SendKeys("#username", "test-user@127.0.0.1"),
		chromedp.SendKeys("#password", "verysecure"),
		chromedp.Click("button[type=submit]"),
	)
	deadline := time.Now().Add(10 * time.Second)
	var at string
	for time.Now().Before(deadline) {
		at = run(t, b, chromedp.Location())
		if strings.HasPrefix(at, h.srv.URL) || strings.HasPrefix(at, evil.URL) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasPrefix(at, h.srv.URL) {
		t.Errorf("after signing in through a crafted link Chromium is at %s, not on keyledger (%s)", at, h.srv.URL)
	}
}
