package http_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/oidctest"
)

// The identity provider of these tests is zitadel/oidc's example OpenID
// Provider, run in-process by internal/oidctest (which says why).

type provider struct {
	srv *httptest.Server
}

func startProvider(t *testing.T) *provider {
	t.Helper()
	return &provider{srv: oidctest.Start(t).Server}
}

// webAgent is a client with cookies that follows redirects, as a browser does.
type webAgent struct {
	t      *testing.T
	client *http.Client
	last   *url.URL
}

func newWebAgent(t *testing.T) *webAgent {
	jar, _ := cookiejar.New(nil)
	b := &webAgent{t: t}
	b.client = &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(r *http.Request, _ []*http.Request) error {
		b.last = r.URL
		return nil
	}}
	return b
}

func (b *webAgent) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	res, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func (b *webAgent) get(u string) (*http.Response, string) {
	req, _ := http.NewRequest("GET", u, nil)
	return b.do(req)
}

var loginID = regexp.MustCompile(`name="id" value="([^"]+)"`)

// signIn goes through the provider's own login page as a person would,
// and returns where it ended.
func (b *webAgent) signIn(p *provider, start, user string) (*http.Response, string) {
	b.t.Helper()
	res, page := b.get(start)
	m := loginID.FindStringSubmatch(page)
	if res.StatusCode != 200 || m == nil {
		b.t.Fatalf("the provider's login page: %d %s", res.StatusCode, page)
	}
	form := url.Values{"id": {m[1]}, "username": {user}, "password": {"verysecure"}}
	req, _ := http.NewRequest("POST", p.srv.URL+"/login/username", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// startSSO runs an instance whose managers sign in with the provider p
// (group keyledger-{org}-managers), its data in dir.
func startSSO(t *testing.T, p *provider, dir string, scopes ...string) (*harness, *khttp.SSO, string) {
	t.Helper()
	pattern, _ := domain.ParseGroupPattern("keyledger-{org}-managers")
	people := khttp.NewOIDC(context.Background(), khttp.OIDCConfig{Issuer: p.srv.URL, Audience: "keyledger", ManagerGroup: pattern, CLIClientID: oidctest.CLIClientID})
	sso := &khttp.SSO{OIDC: people, ClientID: "keyledger", ClientSecret: "keyledger-secret", Scopes: append([]string{"groups"}, scopes...)}
	h := startWith(t, dir, func(s *khttp.Server) {
		s.OIDC, s.SSO = people, sso
	})
	sessions, err := events.OpenSessions(context.Background(), h.env.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	signIns, err := events.OpenSignIns(context.Background(), h.env.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	sso.Store, sso.SignIns = sessions, signIns
	sso.PublicURL, _ = url.Parse(h.srv.URL)
	oidctest.RegisterWebClient("keyledger", "keyledger-secret", sso.RedirectURL())
	return h, sso, h.bootstrap("acme")
}

// TestSignInWithTheProvidersOwnLoginPage runs the authorization code flow
// with PKCE against a real OpenID Provider: a manager (by group) signs
// in, lands back on the page, and creates a key with the session; a
// member who is not a manager is refused; changes without the CSRF token
// or from another origin, a forged state, a replayed callback and a stale
// session are each refused; sign-out ends the session at keyledger and
// at the provider. Neither the cookie nor any token rests in NATS.
func TestSignInWithTheProvidersOwnLoginPage(t *testing.T) {
	p := startProvider(t)
	dir := t.TempDir()
	h, sso, _ := startSSO(t, p, dir)
	origin := h.srv.URL

	// A manager, by the group keyledger-acme-managers.
	ada := newWebAgent(t)
	res, _ := ada.signIn(p, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1")
	if res.StatusCode != 200 || res.Request.URL.Path != "/acme/configuration/api-keys" {
		t.Fatalf("after signing in: %d at %s, want the org's page", res.StatusCode, res.Request.URL)
	}
	var who struct {
		SignedIn bool     `json:"signed_in"`
		Name     string   `json:"name"`
		Email    string   `json:"email"`
		Manages  []string `json:"manages"`
		MemberOf []string `json:"member_of"`
		CSRF     string   `json:"csrf_token"`
	}
	session := func(b *webAgent) {
		t.Helper()
		who = struct {
			SignedIn bool     `json:"signed_in"`
			Name     string   `json:"name"`
			Email    string   `json:"email"`
			Manages  []string `json:"manages"`
			MemberOf []string `json:"member_of"`
			CSRF     string   `json:"csrf_token"`
		}{}
		_, body := b.get(h.srv.URL + "/v1/session")
		if err := json.Unmarshal([]byte(body), &who); err != nil {
			t.Fatalf("/v1/session: %v %s", err, body)
		}
	}
	session(ada)
	if !who.SignedIn || who.Email != "test-user@zitadel.ch" || strings.Join(who.Manages, ",") != "acme" || who.CSRF == "" {
		t.Fatalf("the session of a manager: %+v", who)
	}
	create := func(b *webAgent, origin, csrf string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", h.srv.URL+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"from the page"}`))
		req.Header.Set("Content-Type", "application/json")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		if csrf != "" {
			req.Header.Set("X-CSRF-Token", csrf)
		}
		return b.do(req)
	}
	if res, body := create(ada, origin, who.CSRF); res.StatusCode != 201 || !strings.Contains(body, `"created_by":{"kind":"user","id":"id1"`) {
		t.Fatalf("a create with the session: %d %s", res.StatusCode, body)
	}
	for name, c := range map[string][2]string{"NoCSRFToken": {origin, ""}, "WrongCSRFToken": {origin, "guess"}, "ForeignOrigin": {"https://evil.example", who.CSRF}, "NoOrigin": {"", who.CSRF}} {
		before := h.env.LastSeq(t)
		if res, body := create(ada, c[0], c[1]); res.StatusCode != 403 || h.env.LastSeq(t) != before {
			t.Errorf("%s: %d %s, want 403 and nothing appended", name, res.StatusCode, body)
		}
	}

	// A member who is not a manager.
	bob := newWebAgent(t)
	bob.signIn(p, h.srv.URL+"/auth/login", "test-user2")
	session(bob)
	if !who.SignedIn || len(who.Manages) != 0 || strings.Join(who.MemberOf, ",") != "acme" {
		t.Fatalf("the session of a member: %+v", who)
	}
	if res, body := create(bob, origin, who.CSRF); res.StatusCode != 403 {
		t.Errorf("a member's create: %d %s, want 403", res.StatusCode, body)
	}

	// A forged state, and a callback replayed.
	eve := newWebAgent(t)
	eve.client.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
		if r.URL.Path == "/auth/callback" && r.URL.Host == mustURL(h.srv.URL).Host { // keyledger's, not the provider's
			eve.last = r.URL
			return http.ErrUseLastResponse
		}
		return nil
	}
	eve.signIn(p, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1")
	callback := eve.last
	if callback == nil || callback.Query().Get("code") == "" {
		t.Fatalf("no callback: %v", callback)
	}
	forged := *callback
	q := forged.Query()
	q.Set("state", "forged")
	forged.RawQuery = q.Encode()
	if res, body := eve.get(forged.String()); res.StatusCode != 401 {
		t.Errorf("a forged state: %d %s, want 401", res.StatusCode, body)
	}
	carol := newWebAgent(t) // someone else's browser, with eve's code and state
	if res, body := carol.get(callback.String()); res.StatusCode != 401 {
		t.Errorf("a callback in a browser that did not start the sign-in: %d %s, want 401", res.StatusCode, body)
	}
	eve.client.CheckRedirect = nil
	if res, body := eve.get(callback.String()); res.StatusCode != 200 || res.Request.URL.Path != "/acme/configuration/api-keys" {
		t.Fatalf("the sign-in itself, after the refused ones: %d at %s %s", res.StatusCode, res.Request.URL, body)
	}
	if res, body := eve.get(callback.String()); res.StatusCode != 401 {
		t.Errorf("the same code and state again (replayed): %d %s, want 401", res.StatusCode, body)
	}

	// Nothing in NATS holds the cookie or a token.
	var cookie string
	for _, c := range ada.client.Jar.Cookies(mustURL(h.srv.URL)) {
		if c.Name == "keyledger_session" {
			cookie = c.Value
		}
	}
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	// (The email is in the stream, as the actor of the key created: it is
	// the audit record. In the session bucket it is sealed.)
	for _, needle := range []string{cookie, who.CSRF, "test-user@zitadel.ch"} {
		_ = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
			if needle == "test-user@zitadel.ch" && !strings.Contains(path, "KV_"+events.SessionsBucket) {
				return nil
			}
			if err == nil && !info.IsDir() {
				if raw, _ := os.ReadFile(path); strings.Contains(string(raw), needle) {
					t.Errorf("%s holds %q", path, needle)
				}
			}
			return nil
		})
	}

	// Sign out: the session ends here, and the webAgent goes to the
	// provider's end_session_endpoint.
	session(ada)
	out := newRequestForm(t, h.srv.URL+"/auth/logout", origin, who.CSRF)
	ada.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, _ = ada.do(out)
	if loc := res.Header.Get("Location"); res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, p.srv.URL) || strings.Contains(loc, "id_token") {
		t.Errorf("sign-out: %d to %q, want the provider's sign-out without a token in the URL", res.StatusCode, loc)
	}
	session(ada)
	if who.SignedIn {
		t.Error("still signed in after signing out")
	}
	replay, _ := http.NewRequest("GET", h.srv.URL+"/v1/orgs/acme/keys", nil)
	replay.AddCookie(&http.Cookie{Name: "keyledger_session", Value: cookie})
	if res, body := newWebAgent(t).do(replay); res.StatusCode != 401 {
		t.Errorf("the cookie after sign-out: %d %s, want 401", res.StatusCode, body)
	}

	// A stale session: past its ID token's expiry, with no refresh token.
	bob.client.CheckRedirect = nil
	sso.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if res, body := bob.get(h.srv.URL + "/v1/orgs/acme/keys"); res.StatusCode != 401 {
		t.Errorf("a session past its ID token's expiry: %d %s, want 401", res.StatusCode, body)
	}
}

func newRequestForm(t *testing.T, u, origin, csrf string) *http.Request {
	req, err := http.NewRequest("POST", u, strings.NewReader(url.Values{"csrf_token": {csrf}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", origin)
	return req
}

func mustURL(s string) *url.URL { u, _ := url.Parse(s); return u }

// TestSessionsAreSharedAndRenewed: a session made on one instance is
// served by another (they share the bucket, so a restart signs nobody
// out), and once its ID token has expired it is renewed with the refresh
// token the provider gave (scope offline_access), keeping its CSRF token.
func TestSessionsAreSharedAndRenewed(t *testing.T) {
	p := startProvider(t)
	h, sso, _ := startSSO(t, p, t.TempDir(), "offline_access")
	ada := newWebAgent(t)
	if res, body := ada.signIn(p, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1"); res.StatusCode != 200 {
		t.Fatalf("sign-in: %d %s", res.StatusCode, body)
	}
	var before struct {
		SignedIn  bool   `json:"signed_in"`
		CSRF      string `json:"csrf_token"`
		Renewable bool   `json:"renewable"`
	}
	_, body := ada.get(h.srv.URL + "/v1/session")
	if err := json.Unmarshal([]byte(body), &before); err != nil || !before.SignedIn || !before.Renewable {
		t.Fatalf("the session: %s, want signed in with a refresh token", body)
	}

	other := instance(t, h.env, func(s *khttp.Server) {
		s.OIDC, s.SSO = sso.OIDC, &khttp.SSO{OIDC: sso.OIDC, ClientID: sso.ClientID, ClientSecret: sso.ClientSecret, PublicURL: sso.PublicURL, Store: sso.Store, Scopes: sso.Scopes}
	})
	req, _ := http.NewRequest("GET", other.srv.URL+"/v1/orgs/acme/keys", nil)
	for _, c := range ada.client.Jar.Cookies(mustURL(h.srv.URL)) {
		req.AddCookie(c)
	}
	if res, body := newWebAgent(t).do(req); res.StatusCode != 200 {
		t.Errorf("the session on another instance: %d %s", res.StatusCode, body)
	}

	sso.Now = func() time.Time { return time.Now().Add(2 * time.Hour) } // past the ID token's exp
	if res, body := ada.get(h.srv.URL + "/v1/orgs/acme/keys"); res.StatusCode != 200 {
		t.Fatalf("a session past its ID token's expiry, with a refresh token: %d %s, want it renewed", res.StatusCode, body)
	}
	var after struct {
		SignedIn bool   `json:"signed_in"`
		CSRF     string `json:"csrf_token"`
	}
	_, body = ada.get(h.srv.URL + "/v1/session")
	if err := json.Unmarshal([]byte(body), &after); err != nil || !after.SignedIn || after.CSRF != before.CSRF {
		t.Errorf("after renewal: %s", body)
	}
}
