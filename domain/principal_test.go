package domain_test

import (
	"fmt"
	"testing"
	"time"

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

// TestMayActOn is the whole matrix of principals against target keys: a
// key may rotate or revoke only a key of its org whose every scope it
// holds; people who manage the org, and the system, may act on any key of
// it; nobody acts on another org's keys.
func TestMayActOn(t *testing.T) {
	key := func(id, org string, scopes ...string) domain.Key {
		return domain.Key{ID: id, OrgID: org, Name: id, Scopes: scopes}
	}
	targets := []domain.Key{
		key("admin", "acme", domain.ScopeManage, "invoices:read"),
		key("weak", "acme", domain.ScopeManage),
		key("billing", "acme", "invoices:read"),
		key("bare", "acme"),
		key("other", "globex", domain.ScopeManage),
	}
	principals := []struct {
		name string
		p    domain.Principal
		// may lists, per target in the order above, "y" when p may act on it.
		may string
	}{
		{"AdminKey", domain.KeyPrincipal(targets[0]), "yyyyn"},
		{"WeakManageKey", domain.KeyPrincipal(targets[1]), "nynyn"},
		{"ManageAndAnotherScopeKey", domain.KeyPrincipal(key("partial", "acme", domain.ScopeManage, "orders:write")), "nynyn"},
		{"KeyWithoutManageScope", domain.KeyPrincipal(targets[2]), "nnnnn"},
		{"ManageKeyOfAnotherOrg", domain.KeyPrincipal(key("g", "globex", domain.ScopeManage, "invoices:read")), "nnnny"},
		{"ManagerPerson", domain.PersonPrincipal("u1", "ada", map[string]string{"acme": domain.RoleManager}), "yyyyn"},
		{"MemberPerson", domain.PersonPrincipal("u2", "bob", map[string]string{"acme": "member"}), "nnnnn"},
		{"ManagerOfAnotherOrg", domain.PersonPrincipal("u3", "cy", map[string]string{"globex": domain.RoleManager}), "nnnny"},
		{"PersonWithoutRoles", domain.PersonPrincipal("u4", "di", nil), "nnnnn"},
		{"System", domain.SystemPrincipal("bootstrap", "keyledger bootstrap"), "yyyyy"},
		{"Nobody", domain.Principal{}, "nnnnn"},
	}
	for _, pc := range principals {
		for i, target := range targets {
			t.Run(pc.name+"/On"+target.ID, func(t *testing.T) {
				want := ""
				if pc.may[i] == 'n' {
					want = domain.EFORBIDDEN
				}
				if got := domain.ErrorCode(pc.p.MayActOn(&target)); got != want {
					t.Errorf("MayActOn(%s %v) = %q, want %q", target.ID, target.Scopes, got, want)
				}
			})
		}
	}
}

// TestDecideRefusesWhoMayNot holds the rule where it is decided: rotating
// or revoking a key that holds a scope the caller lacks, or creating a key
// for an org the caller does not manage, is forbidden before anything else.
func TestDecideRefusesWhoMayNot(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	secret, err := domain.GenerateSecret("c8k", nil)
	if err != nil {
		t.Fatal(err)
	}
	weak := domain.KeyPrincipal(domain.Key{ID: "weak", OrgID: "acme", Scopes: []string{domain.ScopeManage}})
	admin := domain.Key{ID: "admin", OrgID: "acme", Scopes: []string{domain.ScopeManage, "invoices:read"}}
	if _, err := admin.DecideRotate(domain.RotateKey{By: weak}, now, secret); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("rotate by a weaker key: %v, want forbidden", err)
	}
	if _, err := admin.DecideRevoke(domain.RevokeKey{By: weak}, now); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("revoke by a weaker key: %v, want forbidden", err)
	}
	if _, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "x", Scopes: []string{"invoices:read"}, By: weak}, now, 0, secret); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("create with a scope the caller lacks: %v, want forbidden", err)
	}
	if _, err := domain.DecideCreate(domain.CreateKey{OrgID: "globex", Name: "x", By: weak}, now, 0, secret); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("create in another org: %v, want forbidden", err)
	}
	if _, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "x"}, now, 0, secret); domain.ErrorCode(err) != domain.EFORBIDDEN {
		t.Errorf("create by nobody: %v, want forbidden", err)
	}
}

// TestWriteOwner: a key's writes spend the budget of whoever minted it,
// back through keys minting keys, to a person, or to the first key
// keyledger minted.
func TestWriteOwner(t *testing.T) {
	system := domain.Actor{Kind: domain.ActorSystem, ID: "bootstrap"}
	ada := domain.Actor{Kind: domain.ActorUser, ID: "ada"}
	keys := map[string]domain.Key{
		"admin":      {ID: "admin", OrgID: "acme", CreatedBy: system},
		"child":      {ID: "child", OrgID: "acme", CreatedBy: domain.Actor{Kind: domain.ActorKey, ID: "admin"}},
		"grandchild": {ID: "grandchild", OrgID: "acme", CreatedBy: domain.Actor{Kind: domain.ActorKey, ID: "child"}},
		"adas":       {ID: "adas", OrgID: "acme", CreatedBy: ada},
		"adas-child": {ID: "adas-child", OrgID: "acme", CreatedBy: domain.Actor{Kind: domain.ActorKey, ID: "adas"}},
	}
	keyOf := func(_, id string) (domain.Key, bool) { k, ok := keys[id]; return k, ok }
	for who, want := range map[string]domain.Actor{
		"admin": {Kind: domain.ActorKey, ID: "admin"}, "child": {Kind: domain.ActorKey, ID: "admin"},
		"grandchild": {Kind: domain.ActorKey, ID: "admin"}, "adas": ada, "adas-child": ada,
		"unknown": {Kind: domain.ActorKey, ID: "unknown"},
	} {
		if got, err := domain.WriteOwner(domain.Actor{Kind: domain.ActorKey, ID: who}, "acme", keyOf); err != nil || got.Kind != want.Kind || got.ID != want.ID {
			t.Errorf("WriteOwner(%s) = %+v, %v; want %+v", who, got, err, want)
		}
	}
	if got, err := domain.WriteOwner(ada, "acme", keyOf); err != nil || got != ada {
		t.Errorf("a person writes on their own budget, got %+v, %v", got, err)
	}
	// A chain of keys minting keys below admin: down to MaxLineage deep
	// each is charged to admin; deeper, none may write (charged to an
	// ancestor, a deep enough tree would escape the limit).
	parent := "admin"
	for depth := 1; depth <= domain.MaxLineage+1; depth++ {
		id := fmt.Sprintf("link-%d", depth)
		keys[id] = domain.Key{ID: id, OrgID: "acme", CreatedBy: domain.Actor{Kind: domain.ActorKey, ID: parent}}
		parent = id
		got, err := domain.WriteOwner(domain.Actor{Kind: domain.ActorKey, ID: id}, "acme", keyOf)
		switch {
		case depth <= domain.MaxLineage && (err != nil || got.ID != "admin"):
			t.Errorf("a key %d deep: %+v, %v; want admin's budget", depth, got, err)
		case depth > domain.MaxLineage && domain.ErrorCode(err) != domain.EFORBIDDEN:
			t.Errorf("a key %d deep: %+v, %v; want EFORBIDDEN", depth, got, err)
		}
	}
}

// TestMayHoldUntil: a key that expires may obtain only keys that expire
// no later; people, the system and keys that never expire, any.
func TestMayHoldUntil(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	temp := domain.KeyPrincipal(domain.Key{ID: "temp", OrgID: "acme", ExpiresAt: t0})
	forever := domain.KeyPrincipal(domain.Key{ID: "ops", OrgID: "acme"})
	for _, tc := range []struct {
		p       domain.Principal
		expires time.Time
		want    string
	}{
		{temp, time.Time{}, domain.EFORBIDDEN},
		{temp, t0.Add(time.Second), domain.EFORBIDDEN},
		{temp, t0, ""},
		{temp, t0.Add(-time.Hour), ""},
		{forever, time.Time{}, ""},
		{domain.PersonPrincipal("u", "ada", nil), time.Time{}, ""},
	} {
		if got := domain.ErrorCode(tc.p.MayHoldUntil(tc.expires)); got != tc.want {
			t.Errorf("%s MayHoldUntil(%v) = %q, want %q", tc.p.Actor.ID, tc.expires, got, tc.want)
		}
	}
}
