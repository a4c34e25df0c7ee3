package http_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

const audience = "keyledger-test"

// idp is a local OpenID provider: discovery, a JWKS that can be rolled
// over, and really signed tokens.
type idp struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	public []jose.JSONWebKey
	keys   map[string]signingKey // by kid, including keys not published
}

type signingKey struct {
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	p := &idp{t: t, keys: map[string]signingKey{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256", "EdDSA"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: p.public})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

// addKey makes a signing key; published ones appear in the JWKS.
func (p *idp) addKey(kid string, alg jose.SignatureAlgorithm, published bool) {
	p.t.Helper()
	var key crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.EdDSA:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = signingKey{alg, key}
	if published {
		p.public = append(p.public, jose.JSONWebKey{Key: key.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"})
	}
}

// rollOver publishes only the given keys from now on.
func (p *idp) rollOver(kids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.public = nil
	for _, kid := range kids {
		k := p.keys[kid]
		p.public = append(p.public, jose.JSONWebKey{Key: k.key.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
	}
}

// claims are a valid manager of acme's, changed by the given edits.
func (p *idp) claims(edits ...func(map[string]any)) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": p.srv.URL, "aud": audience, "sub": "user-42", "email": "ada@acme.example", "email_verified": true,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
		"keyledger_roles": map[string]string{"acme": "manager"},
	}
	for _, e := range edits {
		e(c)
	}
	return c
}

func (p *idp) sign(kid string, claims map[string]any) string {
	p.t.Helper()
	p.mu.Lock()
	k := p.keys[kid]
	p.mu.Unlock()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		p.t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		p.t.Fatal(err)
	}
	return tok
}

func b64(v any) string {
	raw, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(raw)
}

// unsigned is a token with "alg": "none".
func (p *idp) unsigned(kid string) string {
	return b64(map[string]string{"alg": "none", "typ": "JWT", "kid": kid}) + "." + b64(p.claims()) + "."
}

// hmacWithPublicKey is the classic confusion attack: HS256 keyed with the
// RSA public key that the JWKS publishes.
func (p *idp) hmacWithPublicKey(kid string) string {
	p.mu.Lock()
	pub := p.keys[kid].key.Public()
	p.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		p.t.Fatal(err)
	}
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	input := b64(map[string]string{"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + b64(p.claims())
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func withOIDC(p *idp, limit khttp.Limit) func(*khttp.Server) {
	return func(s *khttp.Server) {
		s.OIDC = khttp.NewOIDC(context.Background(), khttp.OIDCConfig{Issuer: p.srv.URL, Audience: audience})
		s.AuthFailureLimit = limit
	}
}

// waitDiscovered waits until the service has discovered the provider.
func (h *harness) waitDiscovered(token string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.request("GET", "/v1/orgs/acme/keys", token, nil).StatusCode == http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			h.t.Fatal("OIDC discovery did not finish within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuthorizationMatrix sends every manager endpoint every kind of
// credential: each gets exactly its status, and no rejected request moves
// the stream.
func TestAuthorizationMatrix(t *testing.T) {
	p := newIDP(t)
	p.addKey("rsa-1", jose.RS256, true)
	p.addKey("stranger", jose.RS256, false)
	h := startWith(t, t.TempDir(), withOIDC(p, khttp.Limit{}))
	admin := h.bootstrap("acme")
	h.bootstrap("globex")
	nonManager := h.create("acme", admin, map[string]any{"name": "reader", "scopes": []string{"invoices:read"}}).Secret
	revoked := h.create("acme", admin, map[string]any{"name": "old admin", "scopes": []string{domain.ScopeManage}})
	h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+revoked.Key.ID, admin, nil)
	validJWT := p.sign("rsa-1", p.claims())
	h.waitDiscovered(validJWT)

	type cred struct {
		name, token string
		header      []string
		status      int // for a rejection; 0: accepted
	}
	creds := []cred{
		{"NoCredential", "", nil, 401},
		{"MalformedHeader", "", []string{"Authorization", "Bearer"}, 401},
		{"NotBearer", "", []string{"Authorization", "Token " + admin}, 401},
		{"ExpiredJWT", p.sign("rsa-1", p.claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })), nil, 401},
		{"NotYetValidJWT", p.sign("rsa-1", p.claims(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), nil, 401},
		{"WrongAudience", p.sign("rsa-1", p.claims(func(c map[string]any) { c["aud"] = "someone-else" })), nil, 401},
		{"WrongIssuer", p.sign("rsa-1", p.claims(func(c map[string]any) { c["iss"] = "https://evil.example" })), nil, 401},
		{"UnknownSigningKey", p.sign("stranger", p.claims()), nil, 401},
		{"AlgNone", p.unsigned("rsa-1"), nil, 401},
		{"HS256WithThePublicKey", p.hmacWithPublicKey("rsa-1"), nil, 401},
		{"MemberRole", p.sign("rsa-1", p.claims(func(c map[string]any) { c["keyledger_roles"] = map[string]string{"acme": "member"} })), nil, 403},
		{"ManagerOfAnotherOrg", p.sign("rsa-1", p.claims(func(c map[string]any) { c["keyledger_roles"] = map[string]string{"globex": "manager"} })), nil, 403},
		{"RevokedManagementKey", revoked.Secret, nil, 401},
		{"NonManagerKey", nonManager, nil, 403},
		{"ValidManagerJWT", validJWT, nil, 0},
		{"ValidManagementKey", admin, nil, 0},
	}
	type endpoint struct {
		name, method, path string // path holds {id} for a fresh key of acme
		body               any
		ok                 int
	}
	endpoints := []endpoint{
		{"Create", "POST", "/v1/orgs/acme/keys", map[string]any{"name": "matrix"}, 201},
		{"List", "GET", "/v1/orgs/acme/keys", nil, 200},
		{"Get", "GET", "/v1/orgs/acme/keys/{id}", nil, 200},
		{"Rotate", "POST", "/v1/orgs/acme/keys/{id}/rotate", nil, 200},
		{"Revoke", "DELETE", "/v1/orgs/acme/keys/{id}", nil, 204},
		{"KeyHistory", "GET", "/v1/orgs/acme/keys/{id}/events", nil, 200},
		{"OrgEvents", "GET", "/v1/orgs/acme/events", nil, 200},
	}
	for _, e := range endpoints {
		for _, c := range creds {
			t.Run(e.name+"/"+c.name, func(t *testing.T) {
				target := h.create("acme", admin, map[string]any{"name": "target"}).Key.ID
				before := h.env.LastSeq(t)
				res := h.request(e.method, strings.ReplaceAll(e.path, "{id}", target), c.token, e.body, c.header...)
				want := c.status
				if want == 0 {
					want = e.ok
				}
				if res.StatusCode != want {
					t.Fatalf("status %d, want %d: %s", res.StatusCode, want, res.body)
				}
				if c.status != 0 {
					if after := h.env.LastSeq(t); after != before {
						t.Errorf("a rejected request moved the stream from %d to %d", before, after)
					}
					if wantCode := map[int]string{401: "unauthenticated", 403: "forbidden"}[c.status]; res.errorCode() != wantCode {
						t.Errorf("code %q, want %q", res.errorCode(), wantCode)
					}
				}
			})
		}
	}

	t.Run("PersonIsTheActor", func(t *testing.T) {
		k := h.create("acme", validJWT, map[string]any{"name": "made by a person", "scopes": []string{"anything:at-all"}})
		if got := k.Key.CreatedBy; got.Kind != "user" || got.ID != "user-42" || got.Name != "ada@acme.example" {
			t.Errorf("created_by = %+v, want the signed-in person", got)
		}
	})
	t.Run("KeyCannotGrantAScopeItLacks", func(t *testing.T) {
		before := h.env.LastSeq(t)
		res := h.must(http.StatusForbidden, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "stronger", "scopes": []string{"billing:admin"}})
		if res.errorCode() != "forbidden" || h.env.LastSeq(t) != before {
			t.Errorf("escalation: %s", res.body)
		}
	})
}

// TestJWKSRollover replaces the provider's signing keys while the service
// runs: new RS256 and EdDSA keys are picked up, the retired one stops.
func TestJWKSRollover(t *testing.T) {
	p := newIDP(t)
	p.addKey("rsa-1", jose.RS256, true)
	h := startWith(t, t.TempDir(), withOIDC(p, khttp.Limit{}))
	old := p.sign("rsa-1", p.claims())
	h.waitDiscovered(old)
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys", old, nil)

	p.addKey("rsa-2", jose.RS256, false)
	p.addKey("ed-1", jose.EdDSA, false)
	p.rollOver("rsa-2", "ed-1")
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys", p.sign("rsa-2", p.claims()), nil)
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys", p.sign("ed-1", p.claims()), nil)
	h.must(http.StatusUnauthorized, "GET", "/v1/orgs/acme/keys", p.sign("rsa-1", p.claims()), nil)
}

func TestFailedAuthenticationsAreRateLimited(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.AuthFailureLimit = khttp.Limit{Per: 3, Every: time.Minute} })
	admin := h.bootstrap("acme")
	h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys", admin, nil) // successes cost nothing
	wrong := mustSecret(t)
	for i := range 3 {
		h.must(http.StatusUnauthorized, "GET", "/v1/orgs/acme/keys", wrong, nil, "X-Attempt", fmt.Sprint(i))
	}
	for _, token := range []string{wrong, admin} {
		res := h.must(http.StatusTooManyRequests, "GET", "/v1/orgs/acme/keys", token, nil)
		if res.errorCode() != "rate_limited" || res.Header.Get("Retry-After") == "" {
			t.Errorf("429 answer: %s %v", res.body, res.Header)
		}
	}
	res := h.must(http.StatusTooManyRequests, "GET", "/v1/whoami", wrong, nil)
	if res.Header.Get("Retry-After") == "" {
		t.Error("whoami 429 without Retry-After")
	}
}

func TestVerifyIsRateLimited(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.VerifyLimit = khttp.Limit{Per: 5, Every: time.Minute} })
	for range 5 {
		h.must(http.StatusOK, "POST", "/v1/verify", "", map[string]string{"key": "nope"})
	}
	res := h.must(http.StatusTooManyRequests, "POST", "/v1/verify", "", map[string]string{"key": "nope"})
	if res.errorCode() != "rate_limited" || res.Header.Get("Retry-After") == "" {
		t.Errorf("429 answer: %s %v", res.body, res.Header)
	}
}

func TestAnswersCarryCacheAndSecurityHeaders(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	created := h.must(http.StatusCreated, "POST", "/v1/orgs/acme/keys", admin, map[string]any{"name": "a"})
	var k issued
	created.json(t, &k)
	rotated := h.must(http.StatusOK, "POST", "/v1/orgs/acme/keys/"+k.Key.ID+"/rotate", admin, nil)
	for name, res := range map[string]response{"create": created, "rotate": rotated} {
		if got := res.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s: Cache-Control = %q, want no-store", name, got)
		}
	}
	for _, res := range []response{created, h.request("GET", "/healthz", "", nil), h.request("GET", "/nowhere", "", nil)} {
		for _, hdr := range []string{"X-Content-Type-Options", "X-Frame-Options", "Content-Security-Policy", "Referrer-Policy"} {
			if res.Header.Get(hdr) == "" {
				t.Errorf("%s missing on %s", hdr, res.Request.URL.Path)
			}
		}
		if res.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Error("CORS is on without being configured")
		}
	}
}

func TestCORSOnlyForConfiguredOrigins(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.CORSOrigins = []string{"https://console.acme.example"} })
	res := h.request("OPTIONS", "/v1/orgs/acme/keys", "", nil, "Origin", "https://console.acme.example", "Access-Control-Request-Method", "POST")
	if res.StatusCode != http.StatusNoContent || res.Header.Get("Access-Control-Allow-Origin") != "https://console.acme.example" {
		t.Errorf("preflight from an allowed origin: %d %v", res.StatusCode, res.Header)
	}
	res = h.request("GET", "/healthz", "", nil, "Origin", "https://evil.example")
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Error("an unlisted origin was allowed")
	}
}
