package main

import (
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
