package http_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// TestManagerGroupsGrantRoles signs people in with tokens that carry only
// group names, as Dex, Entra ID, Okta and Google Workspace send them: the
// members of the group the pattern names for an org manage it, the
// members of another org's group do not, the roles map still counts, and
// a groups claim that is no list of names is refused. Nothing refused
// moves the stream.
func TestManagerGroupsGrantRoles(t *testing.T) {
	p := newIDP(t)
	p.addKey("rsa-1", jose.RS256, true)
	pattern, err := domain.ParseGroupPattern("keyledger-{org}-managers")
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.OIDC = khttp.NewOIDC(context.Background(), khttp.OIDCConfig{Issuer: p.srv.URL, Audience: audience, ManagerGroup: pattern, GroupsClaim: "team_groups"})
	})
	h.bootstrap("acme")
	token := func(groups any, roles map[string]string) string {
		return p.sign("rsa-1", p.claims(func(c map[string]any) {
			delete(c, "keyledger_roles")
			if roles != nil {
				c["keyledger_roles"] = roles
			}
			if groups != nil {
				c["team_groups"] = groups
			}
		}))
	}
	manager := token([]string{"engineering", "keyledger-acme-managers"}, nil)
	h.waitDiscovered(manager)

	for _, c := range []struct {
		name   string
		token  string
		status int
	}{
		{"MemberOfTheOrgsManagerGroup", manager, http.StatusCreated},
		{"OneGroupAsAString", token("keyledger-acme-managers", nil), http.StatusCreated},
		{"RolesMapStillCounts", token([]string{"engineering"}, map[string]string{"acme": "manager"}), http.StatusCreated},
		{"GroupMakesAMemberAManager", token([]string{"keyledger-acme-managers"}, map[string]string{"acme": "member"}), http.StatusCreated},
		{"AnotherOrgsManagerGroup", token([]string{"keyledger-globex-managers"}, nil), http.StatusForbidden},
		{"NearMiss", token([]string{"keyledger-acme-managers-old", "acme", "keyledger-acme", "Keyledger-acme-managers"}, nil), http.StatusForbidden},
		{"NoGroups", token(nil, nil), http.StatusForbidden},
		{"GroupsUnderTheDefaultName", p.sign("rsa-1", p.claims(func(c map[string]any) {
			delete(c, "keyledger_roles")
			c["groups"] = []string{"keyledger-acme-managers"}
		})), http.StatusForbidden},
		{"GroupsNotNames", token([]any{42, map[string]string{"acme": "manager"}}, nil), http.StatusUnauthorized},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := h.env.LastSeq(t)
			res := h.request("POST", "/v1/orgs/acme/keys", c.token, map[string]any{"name": "from a group"})
			if res.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", res.StatusCode, c.status, res.body)
			}
			if c.status != http.StatusCreated && h.env.LastSeq(t) != before {
				t.Error("a refused request moved the stream")
			}
		})
	}

	k := h.create("acme", manager, map[string]any{"name": "made by a group member"})
	if got := k.Key.CreatedBy; got.Kind != "user" || got.ID != "user-42" || got.Name != "ada@acme.example" {
		t.Errorf("created_by = %+v, want the signed-in person", got)
	}
}
