// Package oidctest runs a real OpenID Provider for tests: zitadel/oidc's
// example provider (github.com/zitadel/oidc/v3/example/server), in
// process, a certified OpenID Connect implementation with its own login
// page and device flow, not a stub written to agree with keyledger. Its
// example storage knows two users, test-user@127.0.0.1 and test-user2
// (password verysecure); the wrapper here only adds the claims a company's
// provider would send (groups, or keyledger_roles), lets the ID token
// carry email and name, and makes CLIClientID a public client of the
// device authorization grant.
package oidctest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// The clients the provider knows, besides those a test registers.
const (
	// CLIClientID is a public client (no secret) of the device grant.
	CLIClientID = "keyledger-cli"
	// Password is every example user's.
	Password = "verysecure"
)

// Claims are the claims each example user's ID token gets: id1 (the first
// user) is in the group keyledger-acme-managers, id2 a member of acme.
var Claims = map[string]map[string]any{
	"id1": {"groups": []string{"engineering", "keyledger-acme-managers"}},
	"id2": {"keyledger_roles": map[string]string{"acme": "member"}},
}

// Provider is a running provider.
type Provider struct {
	Server *httptest.Server
}

// URL is its issuer.
func (p *Provider) URL() string { return p.Server.URL }

// Start runs a provider until the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	p := &Provider{}
	var handler http.Handler
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	t.Cleanup(p.Server.Close)
	users := storage.NewUserStore(p.Server.URL)
	st := withClaims{Storage: storage.NewStorage(users), users: users, claims: Claims}
	storage.RegisterClients(storage.DeviceClient(CLIClientID, ""))
	handler = exampleop.SetupServer(p.Server.URL, st, nil, false)
	return p
}

// RegisterWebClient registers a confidential web client.
func RegisterWebClient(id, secret, redirectURL string) {
	storage.RegisterClients(storage.WebClient(id, secret, redirectURL))
}

// withClaims is the example storage, adding claims per user id.
type withClaims struct {
	*storage.Storage
	users  storage.UserStore
	claims map[string]map[string]any
}

// CompleteDeviceAuthorization makes the person who confirmed a device
// sign-in its subject by their id, as every other sign-in's (the example
// stores the user name).
func (s withClaims) CompleteDeviceAuthorization(ctx context.Context, userCode, subject string) error {
	if u := s.users.GetUserByUsername(subject); u != nil {
		subject = u.ID
	}
	return s.Storage.CompleteDeviceAuthorization(ctx, userCode, subject)
}

func (s withClaims) SetUserinfoFromRequest(ctx context.Context, info *zoidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, info, req, scopes); err != nil {
		return err
	}
	for k, v := range s.claims[req.GetSubject()] {
		info.AppendClaims(k, v)
	}
	return nil
}

func (s withClaims) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	if id == CLIClientID {
		return publicClient{claimsInIDToken{c}}, nil
	}
	return claimsInIDToken{c}, nil
}

// claimsInIDToken puts the profile and email claims in the ID token, as
// most providers do.
type claimsInIDToken struct{ op.Client }

func (claimsInIDToken) IDTokenUserinfoClaimsAssertion() bool { return true }
func (claimsInIDToken) IsScopeAllowed(scope string) bool     { return scope == "groups" }

// publicClient authenticates with no secret, as a CLI does.
type publicClient struct{ claimsInIDToken }

func (publicClient) AuthMethod() zoidc.AuthMethod        { return zoidc.AuthMethodNone }
func (publicClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeNative }
