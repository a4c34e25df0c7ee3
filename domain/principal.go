package domain

import (
	"slices"
	"time"
)

// RoleManager is the org role that may manage keys.
const RoleManager = "manager"

// Principal is an authenticated caller: a person signed in through the
// identity provider, a management key, or keyledger itself. Its zero value
// may do nothing.
type Principal struct {
	Actor Actor
	// ExpiresAt is when the credential stops being valid (a token's exp,
	// the end of a key's secret), so that what lasts, an event stream,
	// ends then; zero: not before something else ends it.
	ExpiresAt time.Time
	// roles maps org ids to a person's role there.
	roles map[string]string
	// key is set for a management key.
	key *Key
}

// KeyPrincipal is the caller holding key k.
func KeyPrincipal(k Key) Principal {
	return Principal{Actor: Actor{Kind: ActorKey, ID: k.ID, Name: k.Name}, key: &k}
}

// PersonPrincipal is a signed-in person with their roles per org.
func PersonPrincipal(subject, name string, roles map[string]string) Principal {
	return Principal{Actor: Actor{Kind: ActorUser, ID: subject, Name: name}, roles: roles}
}

// Roles returns a copy of a person's roles per org.
func (p Principal) Roles() map[string]string {
	roles := make(map[string]string, len(p.roles))
	for org, role := range p.roles {
		roles[org] = role
	}
	return roles
}

// SystemPrincipal is keyledger itself acting, e.g. for bootstrap.
func SystemPrincipal(id, name string) Principal {
	return Principal{Actor: Actor{Kind: ActorSystem, ID: id, Name: name}}
}

// MayManage returns nil when p may manage the keys of org: a person whose
// role there is manager, or a key of that org holding keys:manage, or the
// system. Returns EFORBIDDEN.
func (p Principal) MayManage(org string) error {
	switch {
	case p.Actor.Kind == ActorSystem:
		return nil
	case p.key != nil && p.key.OrgID == org && p.key.HasScope(ScopeManage):
		return nil
	case p.key == nil && p.Actor.Kind == ActorUser && p.roles[org] == RoleManager:
		return nil
	}
	return Errorf(EFORBIDDEN, "this credential may not manage the keys of org %s", org)
}

// MayGrant returns nil when p may give a new key these scopes: a key only
// scopes it holds itself, so that no key can mint a stronger one. People
// who manage the org, and the system, may grant any. Returns EFORBIDDEN.
func (p Principal) MayGrant(scopes []string) error {
	if p.key == nil {
		return nil
	}
	for _, s := range scopes {
		if !slices.Contains(p.key.Scopes, s) {
			return Errorf(EFORBIDDEN, "this key cannot grant scope %q, which it does not hold", s)
		}
	}
	return nil
}

// MayHoldUntil returns nil when p may obtain the secret of a key that
// expires at expires (zero: never), by creating or rotating it: a key that
// expires may not, so that a key made to last an hour (a contractor's, an
// incident's) cannot hand itself a key that outlives it. People and the
// system may. Returns EFORBIDDEN.
//
// What counts is when the value presented stops working: the key's expiry,
// or sooner, for a value a rotation replaced, the end of its grace period
// (ExpiresAt, as the caller was authenticated). A leaked old value, still
// valid for a minute, cannot mint a key that never expires, nor rotate its
// own key away from the owner.
func (p Principal) MayHoldUntil(expires time.Time) error {
	if p.key == nil {
		return nil
	}
	end := p.key.ExpiresAt
	if !p.ExpiresAt.IsZero() && (end.IsZero() || p.ExpiresAt.Before(end)) {
		end = p.ExpiresAt
	}
	if end.IsZero() {
		return nil
	}
	if expires.IsZero() || expires.After(end) {
		what := "this key expires"
		if !end.Equal(p.key.ExpiresAt) {
			what = "this value of the key stops working (a rotation replaced it)"
		}
		return Errorf(EFORBIDDEN, "%s at %s: it may not obtain a key that outlives it (set an expires_at no later, or use the key's current value)", what, end.UTC().Format(time.RFC3339))
	}
	return nil
}

// MayActOn returns nil when p may rotate or revoke k: p must manage k's
// org, and a key may act only on a key whose scopes it could grant itself.
// A rotation hands its caller the new secret with every scope of the key,
// and without a grace period locks the key's owner out: were a weaker key
// allowed to rotate a stronger one, it would become that key; allowed to
// revoke it, it could disarm the org's admin. People who manage the org,
// and the system, may act on any key of it. Returns EFORBIDDEN.
func (p Principal) MayActOn(k *Key) error {
	if err := p.MayManage(k.OrgID); err != nil {
		return err
	}
	if p.key == nil {
		return nil
	}
	for _, s := range k.Scopes {
		if !slices.Contains(p.key.Scopes, s) {
			return Errorf(EFORBIDDEN, "this key may not act on key %s, which holds scope %q that this key does not", k.ID, s)
		}
	}
	return nil
}

// MaxLineage bounds how deep keys may mint keys and still write: a key
// more than MaxLineage keys below the person (or the bootstrap key) its
// lineage starts from may revoke, but neither create nor rotate.
const MaxLineage = 64

// WriteOwner says whose budget of writes an actor's creates and rotations
// spend. A person's and keyledger's own are theirs. A key's are those of
// whoever minted it, back through keys minting keys: the person who minted
// the first of them, or, for a key keyledger minted (bootstrap), that
// first key. So a key cannot escape a limit on writes by minting keys that
// each have a budget of their own. keyOf finds a key of the org. Returns
// EFORBIDDEN for a key deeper than MaxLineage, whose lineage is not walked
// further: charging it to an ancestor whose budget nobody spent would let
// a deep enough tree of keys escape the limit again.
func WriteOwner(a Actor, org string, keyOf func(org, id string) (Key, bool)) (Actor, error) {
	if a.Kind != ActorKey {
		return a, nil
	}
	owner := a
	for range MaxLineage + 1 {
		k, ok := keyOf(org, owner.ID)
		if !ok {
			return owner, nil
		}
		switch k.CreatedBy.Kind {
		case ActorKey:
			owner = k.CreatedBy
		case ActorUser:
			return k.CreatedBy, nil
		default:
			return owner, nil
		}
	}
	return Actor{}, Errorf(EFORBIDDEN, "this key was minted more than %d keys deep by keys minting keys: it may not create or rotate keys (a person, or a key nearer the first, may)", MaxLineage)
}
