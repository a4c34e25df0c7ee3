package http_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/go-jose/go-jose/v4"

	khttp "github.com/keyledger/keyledger/http"
)

// TestAttackCLIClientIDAudience: with CLIClientID set, go-oidc's client id
// check is skipped and verify checks aud itself. A token the same issuer
// minted for a third client (whatever its azp) must not sign anyone in;
// tokens naming Audience or CLIClientID must.
func TestAttackCLIClientIDAudience(t *testing.T) {
	p := newIDP(t)
	p.addKey("rsa-1", jose.RS256, true)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.OIDC = khttp.NewOIDC(context.Background(), khttp.OIDCConfig{Issuer: p.srv.URL, Audience: audience, CLIClientID: "keyledger-cli"})
	})
	h.bootstrap("acme")
	h.waitDiscovered(p.sign("rsa-1", p.claims()))
	for name, c := range map[string]struct {
		aud    any
		azp    string
		status int
	}{
		"ThirdClient":                 {"billing-app", "", 401},
		"ThirdClientAzpKeyledger":     {"billing-app", audience, 401},
		"ThirdClientAzpCLI":           {[]string{"billing-app"}, "keyledger-cli", 401},
		"EmptyAud":                    {[]string{}, "", 401},
		"EmptyStringAud":              {"", "", 401},
		"CaseVariant":                 {"Keyledger-CLI", "", 401},
		"PrefixOfAudience":            {audience[:len(audience)-1], "", 401},
		"Audience":                    {audience, "", 200},
		"CLIClient":                   {"keyledger-cli", "", 200},
		"MultiAudWithCLI (by design)": {[]string{"billing-app", "keyledger-cli"}, "billing-app", 200},
	} {
		t.Run(name, func(t *testing.T) {
			tok := p.sign("rsa-1", p.claims(func(m map[string]any) {
				m["aud"] = c.aud
				if c.azp != "" {
					m["azp"] = c.azp
				}
			}))
			if got := h.request("GET", "/v1/orgs/acme/keys", tok, nil).StatusCode; got != c.status {
				t.Fatalf("HOLE?: a token with aud %v azp %q answered %d, want %d", c.aud, c.azp, got, c.status)
			}
		})
	}
	// /v1/cli/config, unauthenticated, tells only issuer, client and scopes.
	res := h.request("GET", "/v1/cli/config", "", nil)
	var conf map[string]any
	res.json(t, &conf)
	if res.StatusCode != http.StatusOK || len(conf) != 3 || conf["client_id"] != "keyledger-cli" {
		t.Fatalf("/v1/cli/config: %d %v", res.StatusCode, conf)
	}
}
