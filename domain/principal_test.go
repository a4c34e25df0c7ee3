package domain_test

import (
	"testing"

	"github.com/keyledger/keyledger/domain"
)

func TestPrincipal(t *testing.T) {
	manageKey := domain.Key{ID: "key_A", OrgID: "acme", Name: "admin", Scopes: []string{domain.ScopeManage, "read"}}
	plainKey := domain.Key{ID: "key_B", OrgID: "acme", Name: "svc", Scopes: []string{"read"}}
	for _, tc := range []struct {
		name   string
		p      domain.Principal
		org    string
		scopes []string
		manage string // "" or the error code
		grant  string
	}{
		{"ManagementKeyOfTheOrgManagesAndGrantsWhatItHolds", domain.KeyPrincipal(manageKey), "acme", []string{"read"}, "", ""},
		{"ManagementKeyCannotGrantMore", domain.KeyPrincipal(manageKey), "acme", []string{"write"}, "", domain.EFORBIDDEN},
		{"ManagementKeyOfAnotherOrgIsForbidden", domain.KeyPrincipal(manageKey), "globex", nil, domain.EFORBIDDEN, ""},
		{"KeyWithoutManageScopeIsForbidden", domain.KeyPrincipal(plainKey), "acme", nil, domain.EFORBIDDEN, ""},
		{"ManagerPersonManagesAndGrantsAnything", domain.PersonPrincipal("u1", "ada", map[string]string{"acme": "manager"}), "acme", []string{"billing:admin"}, "", ""},
		{"MemberPersonIsForbidden", domain.PersonPrincipal("u1", "ada", map[string]string{"acme": "member"}), "acme", nil, domain.EFORBIDDEN, ""},
		{"ManagerOfAnotherOrgIsForbidden", domain.PersonPrincipal("u1", "ada", map[string]string{"globex": "manager"}), "acme", nil, domain.EFORBIDDEN, ""},
		{"PersonWithoutRolesIsForbidden", domain.PersonPrincipal("u1", "ada", nil), "acme", nil, domain.EFORBIDDEN, ""},
		{"SystemManagesEverything", domain.SystemPrincipal("bootstrap", "keyledger bootstrap"), "acme", []string{"x"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := domain.ErrorCode(tc.p.MayManage(tc.org)); got != tc.manage {
				t.Errorf("MayManage(%s) = %q, want %q", tc.org, got, tc.manage)
			}
			if got := domain.ErrorCode(tc.p.MayGrant(tc.scopes)); got != tc.grant {
				t.Errorf("MayGrant(%v) = %q, want %q", tc.scopes, got, tc.grant)
			}
		})
	}
	if a := domain.KeyPrincipal(manageKey).Actor; a != (domain.Actor{Kind: domain.ActorKey, ID: "key_A", Name: "admin"}) {
		t.Errorf("key actor = %+v", a)
	}
}
