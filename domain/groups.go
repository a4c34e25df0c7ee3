package domain

import (
	"strings"
)

// GroupPattern names the identity provider's group whose members manage an
// org: a text holding "{org}" once, such as "keyledger-{org}-managers".
// Many providers (Dex, Entra ID, Okta, Google Workspace) can put group
// names in a token, but not a map of roles. Its zero value matches nothing.
type GroupPattern struct {
	prefix, suffix string
	set            bool
}

// OrgPlaceholder stands for the org id in a GroupPattern.
const OrgPlaceholder = "{org}"

// ParseGroupPattern reads a pattern. It must hold "{org}" exactly once, and
// text beside it: "{org}" alone would make the members of any group whose
// name is an org id ("billing", "eng") managers of that org. Returns
// EINVALID.
func ParseGroupPattern(s string) (GroupPattern, error) {
	if strings.Count(s, OrgPlaceholder) != 1 {
		return GroupPattern{}, Errorf(EINVALID, "the manager group pattern %q must hold %s exactly once, e.g. keyledger-{org}-managers", s, OrgPlaceholder)
	}
	prefix, suffix, _ := strings.Cut(s, OrgPlaceholder)
	if prefix == "" && suffix == "" {
		return GroupPattern{}, Errorf(EINVALID, "the manager group pattern must hold more than %s: the members of any group named like an org would manage it", OrgPlaceholder)
	}
	return GroupPattern{prefix: prefix, suffix: suffix, set: true}, nil
}

// Set reports whether the pattern matches anything at all.
func (g GroupPattern) Set() bool { return g.set }

func (g GroupPattern) String() string {
	if !g.set {
		return ""
	}
	return g.prefix + OrgPlaceholder + g.suffix
}

// Org returns the org whose managers group is, if it is one: the text in
// place of {org}, which must be a valid org id.
func (g GroupPattern) Org(group string) (string, bool) {
	if !g.set || len(group) <= len(g.prefix)+len(g.suffix) || !strings.HasPrefix(group, g.prefix) || !strings.HasSuffix(group, g.suffix) {
		return "", false
	}
	org := group[len(g.prefix) : len(group)-len(g.suffix)]
	if ValidateOrgID(org) != nil {
		return "", false
	}
	return org, true
}

// ManagerRoles adds to roles (a map of org → role) the role manager for
// each org whose manager group is among groups. A group grants, never
// takes away: a role the map already gives stays unless a group makes it
// manager.
func (g GroupPattern) ManagerRoles(roles map[string]string, groups []string) {
	for _, group := range groups {
		if org, ok := g.Org(group); ok {
			roles[org] = RoleManager
		}
	}
}
