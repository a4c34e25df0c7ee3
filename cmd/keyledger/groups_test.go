package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestManagerGroupPatternIsChecked: serve refuses, before it opens
// anything, a manager group pattern that would match too much or nothing,
// and one given without an identity provider.
func TestManagerGroupPatternIsChecked(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--oidc-issuer", "https://idp.example", "--oidc-audience", "keyledger", "--oidc-manager-group", "{org}"}, "more than {org}"},
		{[]string{"--oidc-issuer", "https://idp.example", "--oidc-audience", "keyledger", "--oidc-manager-group", "managers"}, "exactly once"},
		{[]string{"--oidc-manager-group", "keyledger-{org}-managers"}, "needs --oidc-issuer"},
	} {
		_, stderr, err := runBinary(t, t.TempDir(), nil, append([]string{"serve", "--http-addr", "127.0.0.1:0"}, c.args...)...)
		if err == nil || !strings.Contains(stderr, c.want) {
			t.Errorf("serve %v: %v, stderr %q; want a refusal saying %q", c.args, err, stderr, c.want)
		}
	}
}

// TestServePrintsTheRedirectURL: with sign-in configured, serve logs the
// redirect URL to register at the provider, derived from --public-url,
// serves the sign-in routes, and masks the client secret in
// --print-config; an http public URL that is not loopback is refused.
func TestServePrintsTheRedirectURL(t *testing.T) {
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_OIDC_ISSUER=http://127.0.0.1:1", "KEYLEDGER_OIDC_CLIENT_ID=keyledger",
		"KEYLEDGER_OIDC_CLIENT_SECRET=s3cret-of-the-client", "KEYLEDGER_PUBLIC_URL=http://" + addr}
	p := serveProcess(t, t.TempDir(), addr, env)
	if want := "http://" + addr + "/auth/callback"; !strings.Contains(p.stderr.String(), want) {
		t.Errorf("serve's log lacks the redirect URL %s:\n%s", want, p.stderr)
	}
	res, err := http.Get(p.url + "/v1/session")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/session: %v %v", res, err)
	}
	if strings.Contains(p.stderr.String(), "s3cret-of-the-client") {
		t.Error("the client secret is in the log")
	}
	out, _, err := runBinary(t, t.TempDir(), env, "serve", "--print-config")
	if err != nil || strings.Contains(out, "s3cret-of-the-client") || !strings.Contains(out, "oidc-client-secret") {
		t.Errorf("--print-config: %v\n%s", err, out)
	}
	_, stderr, err := runBinary(t, t.TempDir(), nil, "serve", "--oidc-issuer", "https://idp.example", "--oidc-client-id", "x", "--public-url", "http://keys.example.com")
	if err == nil || !strings.Contains(stderr, "sessions need https") {
		t.Errorf("an http public URL off loopback: %v %s", err, stderr)
	}
}
