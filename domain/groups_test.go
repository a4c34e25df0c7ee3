package domain

import (
	"maps"
	"testing"
)

func TestGroupPattern(t *testing.T) {
	for _, bad := range []string{"", "managers", "{org}", "{org}-{org}", "keyledger-{org}-{org}"} {
		if _, err := ParseGroupPattern(bad); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
	g, err := ParseGroupPattern("keyledger-{org}-managers")
	if err != nil {
		t.Fatal(err)
	}
	for group, want := range map[string]string{
		"keyledger-acme-managers":       "acme",
		"keyledger-acme-eu-managers":    "acme-eu",
		"keyledger--managers":           "",
		"keyledger-acme-managers-extra": "",
		"other-acme-managers":           "",
		"keyledger-ACME managers":       "",
		"keyledger-Acme!-managers":      "",
		"keyledger-managers":            "",
	} {
		got, ok := g.Org(group)
		if got != want || ok != (want != "") {
			t.Errorf("Org(%q) = %q, %v; want %q", group, got, ok, want)
		}
	}
	roles := map[string]string{"globex": "member", "initech": RoleManager}
	g.ManagerRoles(roles, []string{"keyledger-globex-managers", "engineering", "keyledger-umbrella-managers"})
	if want := map[string]string{"globex": RoleManager, "initech": RoleManager, "umbrella": RoleManager}; !maps.Equal(roles, want) {
		t.Errorf("roles %v, want %v", roles, want)
	}
	var zero GroupPattern
	if _, ok := zero.Org("keyledger-acme-managers"); ok || zero.Set() {
		t.Error("the zero pattern matches")
	}
	prefixOnly, _ := ParseGroupPattern("/keyledger/{org}")
	if org, ok := prefixOnly.Org("/keyledger/acme"); !ok || org != "acme" {
		t.Errorf("a Keycloak full group path: %q %v", org, ok)
	}
}
