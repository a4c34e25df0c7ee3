package http

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/keyledger/keyledger/domain"
)

// OIDCConfig says which identity provider's tokens sign people in.
type OIDCConfig struct {
	Issuer   string // must equal the tokens' iss
	Audience string // must be among the tokens' aud
	// CLIClientID, when set, is the client the CLI signs in as (the device
	// authorization grant): its tokens, whose aud names it, count too.
	CLIClientID string
	// JWKSURL skips discovery and fetches signing keys from here.
	JWKSURL string
	// RolesClaim names the claim holding {"<org>": "<role>"}; default
	// "keyledger_roles".
	RolesClaim string
	// ManagerGroup, when set, makes the members of each group it matches
	// (in the GroupsClaim claim) managers of the group's org, beside what
	// RolesClaim gives.
	ManagerGroup domain.GroupPattern
	// GroupsClaim names the claim listing the person's groups; default
	// "groups".
	GroupsClaim string
	Now         func() time.Time
	Client      *http.Client
	Logger      *slog.Logger
}

// DefaultRolesClaim is the claim read for org roles unless configured.
const DefaultRolesClaim = "keyledger_roles"

// DefaultGroupsClaim is the claim read for groups unless configured.
const DefaultGroupsClaim = "groups"

// signingAlgs are the asymmetric algorithms accepted. "none" and every HMAC
// algorithm are absent: a token signed with the public key as an HMAC
// secret is refused.
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.ES256, oidc.ES384, oidc.ES512, oidc.EdDSA,
}

// OIDC verifies people's JWTs. Discovery runs in the background and is
// retried, so that an identity provider that is down at start costs
// sign-ins (503) rather than the whole service; JWKS keys are cached and
// fetched again when a token names a key id not seen yet (key rollover).
type OIDC struct {
	cfg OIDCConfig

	mu       sync.RWMutex
	verifier *oidc.IDTokenVerifier
	provider *oidc.Provider // once discovered; nil with JWKSURL
	lastErr  error
}

// NewOIDC starts discovery (or uses JWKSURL directly) until ctx ends.
func NewOIDC(ctx context.Context, cfg OIDCConfig) *OIDC {
	if cfg.RolesClaim == "" {
		cfg.RolesClaim = DefaultRolesClaim
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = DefaultGroupsClaim
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	o := &OIDC{cfg: cfg, lastErr: fmt.Errorf("discovery of %s has not finished", cfg.Issuer)}
	if cfg.Client != nil {
		ctx = oidc.ClientContext(ctx, cfg.Client)
	}
	vcfg := &oidc.Config{ClientID: cfg.Audience, SupportedSigningAlgs: signingAlgs, Now: cfg.Now}
	if cfg.CLIClientID != "" {
		vcfg.SkipClientIDCheck = true // checked in verify: Audience or CLIClientID
	}
	if cfg.JWKSURL != "" {
		o.verifier = oidc.NewVerifier(cfg.Issuer, oidc.NewRemoteKeySet(ctx, cfg.JWKSURL), vcfg)
		return o
	}
	go o.discover(ctx, vcfg)
	return o
}

func (o *OIDC) discover(ctx context.Context, vcfg *oidc.Config) {
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
		o.mu.Lock()
		if err == nil {
			o.verifier, o.provider = p.VerifierContext(ctx, vcfg), p
		}
		o.lastErr = err
		o.mu.Unlock()
		if err == nil {
			return
		}
		o.cfg.Logger.Warn("OIDC discovery failed; retrying", "issuer", o.cfg.Issuer, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// looksLikeJWT reports whether a credential has a JWT's three parts.
func looksLikeJWT(s string) bool { return strings.Count(s, ".") == 2 }

// Verify checks a token's signature, iss, aud, exp and nbf, and returns the
// person with their org roles. Returns EUNAUTHENTICATED, or EUNAVAILABLE
// while the provider has not been discovered.
func (o *OIDC) Verify(ctx context.Context, raw string) (domain.Principal, error) {
	p, _, err := o.verify(ctx, raw)
	return p, err
}

// discovered returns the provider once discovery has found it.
func (o *OIDC) discovered() (*oidc.Provider, error) {
	o.mu.RLock()
	defer o.mu.RUnlock()
	if o.provider == nil {
		return nil, domain.Wrap(domain.EUNAVAILABLE, o.lastErr, "the identity provider cannot be reached")
	}
	return o.provider, nil
}

// verify is Verify, also returning the token.
func (o *OIDC) verify(ctx context.Context, raw string) (domain.Principal, *oidc.IDToken, error) {
	o.mu.RLock()
	v, lastErr := o.verifier, o.lastErr
	o.mu.RUnlock()
	if v == nil {
		return domain.Principal{}, nil, domain.Wrap(domain.EUNAVAILABLE, lastErr, "the identity provider cannot be reached")
	}
	tok, err := v.Verify(ctx, raw)
	if err != nil {
		return domain.Principal{}, nil, domain.Wrap(domain.EUNAUTHENTICATED, err, "token is not valid")
	}
	if o.cfg.CLIClientID != "" && !slices.Contains(tok.Audience, o.cfg.Audience) && !slices.Contains(tok.Audience, o.cfg.CLIClientID) {
		return domain.Principal{}, nil, domain.Errorf(domain.EUNAUTHENTICATED, "token is not valid: its audience names neither %s nor %s", o.cfg.Audience, o.cfg.CLIClientID)
	}
	p, err := o.principal(tok)
	return p, tok, err
}

// principal is the person a verified token names, with their org roles.
func (o *OIDC) principal(tok *oidc.IDToken) (domain.Principal, error) {
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return domain.Principal{}, domain.Wrap(domain.EUNAUTHENTICATED, err, "token claims cannot be read")
	}
	roles := map[string]string{}
	if raw, ok := claims[o.cfg.RolesClaim]; ok {
		if err := json.Unmarshal(raw, &roles); err != nil {
			return domain.Principal{}, domain.Wrap(domain.EUNAUTHENTICATED, err, fmt.Sprintf("claim %s must map org ids to roles", o.cfg.RolesClaim))
		}
	}
	if raw, ok := claims[o.cfg.GroupsClaim]; ok && o.cfg.ManagerGroup.Set() {
		groups, err := groupNames(raw)
		if err != nil {
			return domain.Principal{}, domain.Wrap(domain.EUNAUTHENTICATED, err, fmt.Sprintf("claim %s must list group names", o.cfg.GroupsClaim))
		}
		o.cfg.ManagerGroup.ManagerRoles(roles, groups)
	}
	if tok.Subject == "" {
		return domain.Principal{}, domain.Errorf(domain.EUNAUTHENTICATED, "token has no sub")
	}
	p := domain.PersonPrincipal(tok.Subject, actorName(claims, tok.Subject), roles)
	p.ExpiresAt = tok.Expiry
	return p, nil
}

// groupNames reads a groups claim: a list of names, or one name alone,
// as some providers send a single group.
func groupNames(raw json.RawMessage) ([]string, error) {
	var groups []string
	if err := json.Unmarshal(raw, &groups); err == nil {
		return groups, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err != nil {
		return nil, err
	}
	return []string{one}, nil
}

// actorName is how a person is named in the events they cause: their
// email only when the provider verified it (email_verified true, or the
// string "true" some providers send), since at many providers anyone may
// type any address into their profile; otherwise their name, then their
// subject. The name is shown as given: the subject is what identifies.
func actorName(claims map[string]json.RawMessage, subject string) string {
	var email, name string
	_ = json.Unmarshal(claims["email"], &email)
	_ = json.Unmarshal(claims["name"], &name)
	var verified any
	_ = json.Unmarshal(claims["email_verified"], &verified)
	switch {
	case email != "" && (verified == true || verified == "true"):
		return email
	case name != "":
		return name
	}
	return subject
}

// cliConfig answers GET /v1/cli/config: what keyledger login needs to
// sign a person in from a terminal (the device authorization grant), or
// 404 when the CLI has no client.
func (s *Server) cliConfig(w http.ResponseWriter, r *http.Request) {
	if s.OIDC == nil || s.OIDC.cfg.CLIClientID == "" {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "this server signs no one in from a terminal: use a management key"))
		return
	}
	scopes := []string{oidc.ScopeOpenID, "email", "profile", oidc.ScopeOfflineAccess}
	if s.SSO != nil {
		scopes = append(scopes, s.SSO.Scopes...)
	}
	writeJSON(w, http.StatusOK, map[string]any{"issuer": s.OIDC.cfg.Issuer, "client_id": s.OIDC.cfg.CLIClientID, "scopes": scopes})
}
