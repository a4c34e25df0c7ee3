package http_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// hostRouted sends a request for host through ours, anything else (the
// identity provider's pages) straight on.
type hostRouted struct {
	host       string
	ours, rest http.RoundTripper
}

func (h hostRouted) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == h.host {
		return h.ours.RoundTrip(r)
	}
	return h.rest.RoundTrip(r)
}

// ssoTour drives the sign-in routes through the conformance check: without
// sign-in configured, then through a whole sign-in at zitadel/oidc's
// example provider, a forged callback and both ways of signing out.
func ssoTour(t *testing.T, c *conformance) {
	plain := c.client(t, start(t))
	plain.do(http.StatusNotFound, "GET", "/v1/session", "", nil)
	plain.do(http.StatusNotFound, "GET", "/v1/cli/config", "", nil)
	plain.do(http.StatusNotFound, "GET", "/auth/login", "", nil)
	plain.do(http.StatusNotFound, "GET", "/auth/callback?code=x&state=y", "", nil)
	plain.do(http.StatusNotFound, "POST", "/auth/logout", "", nil)

	p := startProvider(t)
	h, _, _ := startSSO(t, p, t.TempDir())
	agent := func() *webAgent {
		a := newWebAgent(t)
		a.client.Transport = hostRouted{host: mustURL(h.srv.URL).Host, ours: &checked{t: t, c: c, next: h.srv.Client().Transport}, rest: http.DefaultTransport}
		return a
	}
	c.client(t, h).do(http.StatusOK, "GET", "/v1/cli/config", "", nil)
	stranger := agent()
	if res, body := stranger.get(h.srv.URL + "/v1/session"); res.StatusCode != 200 || !strings.Contains(body, `"signed_in":false`) {
		t.Fatalf("no session: %d %s", res.StatusCode, body)
	}
	if res, _ := stranger.get(h.srv.URL + "/auth/callback?code=forged&state=forged"); res.StatusCode != http.StatusUnauthorized {
		t.Errorf("a forged callback: %d", res.StatusCode)
	}
	logout := func(a *webAgent, csrf string, accept bool) int {
		t.Helper()
		req, _ := http.NewRequest("POST", h.srv.URL+"/auth/logout", strings.NewReader(url.Values{"csrf_token": {csrf}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", h.srv.URL)
		if accept {
			req.Header.Set("Accept", "application/json")
		}
		a.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		res, _ := a.do(req)
		a.client.CheckRedirect = nil
		return res.StatusCode
	}
	for _, accept := range []bool{true, false} {
		a := agent()
		if res, body := a.signIn(p, h.srv.URL+"/auth/login?next=/acme/configuration/api-keys", "test-user@127.0.0.1"); res.StatusCode != 200 {
			t.Fatalf("sign-in: %d %s", res.StatusCode, body)
		}
		_, body := a.get(h.srv.URL + "/v1/session")
		csrf := body[strings.Index(body, `"csrf_token":"`)+len(`"csrf_token":"`):]
		csrf = csrf[:strings.Index(csrf, `"`)]
		if got := logout(a, "not the token", accept); got != http.StatusForbidden {
			t.Errorf("sign-out without the CSRF token: %d, want 403", got)
		}
		want := map[bool]int{true: http.StatusOK, false: http.StatusSeeOther}[accept]
		if got := logout(a, csrf, accept); got != want {
			t.Errorf("sign-out (Accept JSON %v): %d, want %d", accept, got, want)
		}
	}
}
