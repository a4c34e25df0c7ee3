package http

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/keyledger/keyledger/domain"
)

// SessionStore keeps sign-ins under way and sessions, for every instance;
// events.Sessions (the bucket KEYLEDGER_SESSIONS) is one.
type SessionStore interface {
	Put(ctx context.Context, name string, value []byte) error
	Get(ctx context.Context, name string) ([]byte, error)
	// Take returns the entry and deletes it: one caller only gets it.
	Take(ctx context.Context, name string) ([]byte, error)
	Delete(ctx context.Context, name string) error
}

// SSO signs people in on the page with their identity provider: the
// OpenID Connect authorization code flow with PKCE (S256), then a
// server-side session behind an opaque cookie.
//
// Nothing a browser or NATS holds can be replayed elsewhere:
//   - the browser holds only random ids, in HttpOnly cookies (SameSite=Lax,
//     Secure when PublicURL is https); no token is ever in a URL, a log line
//     or browser storage;
//   - the store holds each entry under the SHA-256 of its cookie, sealed
//     (AES-256-GCM) with a key derived from the cookie: a reader of NATS
//     can neither find a session's cookie nor read what it holds (the
//     person's claims and the refresh token);
//   - a sign-in's state is used once (Take), and bound to the browser that
//     started it (its cookie opens the entry), so a forged or replayed
//     state, or a code for someone else's sign-in, is refused;
//   - a request that changes anything with the session cookie must come
//     from PublicURL's origin (Origin) and carry the session's CSRF token
//     (X-CSRF-Token).
type SSO struct {
	OIDC         *OIDC  // verifies the ID tokens; its audience is ClientID
	ClientID     string // as registered at the provider
	ClientSecret string // "" for a public client (PKCE alone)
	PublicURL    *url.URL
	Store        SessionStore // the sessions
	// SignIns keeps the sign-ins under way (ten minutes each); Store
	// when nil. events.OpenSignIns gives a bucket whose entries expire
	// then, and whose size is bounded.
	SignIns SessionStore
	// SignInLimit bounds the sign-ins one client address may start
	// (default 30 a minute): each costs an entry in NATS.
	SignInLimit Limit
	// Scopes beyond openid, email and profile, such as groups.
	Scopes []string
	Now    func() time.Time
	Client *http.Client
}

const (
	sessionCookie  = "keyledger_session"
	signInCookie   = "keyledger_signin"
	csrfHeader     = "X-CSRF-Token"
	signInLifetime = 10 * time.Minute
	// MaxSessionAge ends a session this long after its sign-in, however
	// often a refresh token renewed it.
	MaxSessionAge = 24 * time.Hour
	// maxBindings is how many sign-ins one browser may have under way:
	// another started in the meantime (a forged link to /auth/login, a
	// second tab) does not cancel the first.
	maxBindings = 4
)

func (o *SSO) signIns() SessionStore {
	if o.SignIns != nil {
		return o.SignIns
	}
	return o.Store
}

// RedirectURL is where the provider sends people back: register it there.
func (o *SSO) RedirectURL() string { return o.PublicURL.JoinPath("/auth/callback").String() }

func (o *SSO) secure() bool { return o.PublicURL.Scheme == "https" }

func (o *SSO) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *SSO) context(ctx context.Context) context.Context {
	if o.Client != nil {
		return context.WithValue(ctx, oauth2.HTTPClient, o.Client)
	}
	return ctx
}

func (o *SSO) config() (*oauth2.Config, *oidc.Provider, error) {
	p, err := o.OIDC.discovered()
	if err != nil {
		return nil, nil, err
	}
	return &oauth2.Config{
		ClientID: o.ClientID, ClientSecret: o.ClientSecret, Endpoint: p.Endpoint(), RedirectURL: o.RedirectURL(),
		Scopes: append([]string{oidc.ScopeOpenID, "email", "profile"}, o.Scopes...),
	}, p, nil
}

// signIn is what the store keeps of a sign-in under way.
type signIn struct {
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Next     string `json:"next"`
	Expires  int64  `json:"expires"` // Unix seconds
}

// session is what the store keeps of a session.
type session struct {
	Subject  string            `json:"sub"`
	Actor    string            `json:"actor"` // the name events record (domain: a verified email, else name, else sub)
	Name     string            `json:"name"`  // the name shown on the page
	Email    string            `json:"email,omitempty"`
	Roles    map[string]string `json:"roles"`
	Expires  int64             `json:"expires"` // Unix seconds: the ID token's exp
	CSRF     string            `json:"csrf"`
	Refresh  string            `json:"refresh,omitempty"`
	SignedIn int64             `json:"signed_in"`
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionEntry is where the store keeps what cookie value id opens.
func sessionEntry(kind, id string) string {
	sum := sha256.Sum256([]byte(kind + "\n" + id))
	return kind + "." + hex.EncodeToString(sum[:])
}

func (o *SSO) seal(kind, id string, v any) ([]byte, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return sealWith(id, sessionEntry(kind, id), "keyledger "+kind+" v1", body)
}

func (o *SSO) open(kind, id string, sealed []byte, v any) error {
	body, err := openWith(id, sessionEntry(kind, id), "keyledger "+kind+" v1", sealed)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, v)
}

func (o *SSO) cookie(name, value, path string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true, Secure: o.secure(), SameSite: http.SameSiteLaxMode}
}

// pagePath matches the one page a sign-in returns to.
var pagePath = regexp.MustCompile(`^/[a-z0-9][a-z0-9-]{0,62}/configuration/api-keys$`)

// safeNext keeps the return path only if it is an org's page, exactly:
// anything else ("//evil", "/\\evil", "/./\\evil", tabs a browser drops,
// encodings) could take the browser elsewhere once tidied, so it is
// dropped ("": the person's first org).
func safeNext(next string) string {
	if pagePath.MatchString(next) {
		return next
	}
	return ""
}

// landing is where a sign-in without a return path ends: the page of the
// first org the person manages, else of the first they belong to, else
// their session's own description.
func landing(sess session) string {
	var manages, member []string
	for org, role := range sess.Roles {
		if domain.ValidateOrgID(org) != nil {
			continue
		}
		if role == domain.RoleManager {
			manages = append(manages, org)
		} else {
			member = append(member, org)
		}
	}
	slices.Sort(manages)
	slices.Sort(member)
	if orgs := append(manages, member...); len(orgs) > 0 {
		return "/" + orgs[0] + "/configuration/api-keys"
	}
	return "/v1/session"
}

// login starts a sign-in: GET /auth/login?next=/acme/configuration/api-keys.
func (s *Server) ssoLogin(w http.ResponseWriter, r *http.Request) {
	o := s.SSO
	if ok, retry := s.signInLimiter.take(clientKey(r)); !ok {
		s.rateLimited(w, r, retry, "sign-ins")
		return
	}
	cfg, _, err := o.config()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	state, binding := randomID(), randomID()
	in := signIn{Nonce: randomID(), Verifier: oauth2.GenerateVerifier(), Next: safeNext(r.URL.Query().Get("next")), Expires: o.now().Add(signInLifetime).Unix()}
	// The entry is named by the state and sealed with the browser's
	// binding cookie: only this browser, once, can finish this sign-in.
	sealed, err := o.seal("signin", state+"."+binding, in)
	if err == nil {
		err = o.signIns().Put(r.Context(), sessionEntry("signin", state), sealed)
	}
	if err != nil {
		s.fail(w, r, domain.Wrap(domain.EUNAVAILABLE, err, "sign-in cannot start: the session store cannot be reached"))
		return
	}
	// The new binding first, beside those of sign-ins still under way.
	bindings := []string{binding}
	if c, err := r.Cookie(signInCookie); err == nil {
		for _, b := range strings.Split(c.Value, ".") {
			if len(bindings) < maxBindings && len(b) == len(binding) {
				bindings = append(bindings, b)
			}
		}
	}
	http.SetCookie(w, o.cookie(signInCookie, strings.Join(bindings, "."), "/auth/", int(signInLifetime/time.Second)))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(in.Verifier), oidc.Nonce(in.Nonce)), http.StatusFound)
}

// errSignIn is the answer to a callback that does not finish a sign-in
// this browser started, a moment ago.
var errSignIn = domain.Errorf(domain.EUNAUTHENTICATED, "this sign-in is not one this browser started, or it was already used or has expired: sign in again")

// callback finishes a sign-in: GET /auth/callback?code=…&state=….
func (s *Server) ssoCallback(w http.ResponseWriter, r *http.Request) {
	o := s.SSO
	q := r.URL.Query()
	w.Header().Set("Cache-Control", "no-store")
	if e := q.Get("error"); e != "" {
		s.fail(w, r, domain.Errorf(domain.EUNAUTHENTICATED, "the identity provider refused the sign-in: %s", printableText(e, 200)))
		return
	}
	binding, err := r.Cookie(signInCookie)
	state := q.Get("state")
	if err != nil || state == "" || q.Get("code") == "" {
		s.fail(w, r, errSignIn)
		return
	}
	sealed, err := o.signIns().Take(r.Context(), sessionEntry("signin", state))
	if err != nil {
		s.fail(w, r, domain.Wrap(domain.EUNAVAILABLE, err, "the session store cannot be reached"))
		return
	}
	var in signIn
	opened, rest := false, []string{}
	for _, b := range strings.Split(binding.Value, ".") {
		if !opened && sealed != nil && o.open("signin", state+"."+b, sealed, &in) == nil {
			opened = true
			continue
		}
		rest = append(rest, b)
	}
	if !opened || o.now().Unix() > in.Expires {
		s.fail(w, r, errSignIn)
		return
	}
	// This sign-in's binding has served; those of other sign-ins under way
	// stay. (A callback with another state leaves them all, so that a
	// forged link cannot cancel a sign-in.)
	if len(rest) == 0 {
		http.SetCookie(w, o.cookie(signInCookie, "", "/auth/", -1))
	} else {
		http.SetCookie(w, o.cookie(signInCookie, strings.Join(rest, "."), "/auth/", int(signInLifetime/time.Second)))
	}
	cfg, _, err := o.config()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx := o.context(r.Context())
	tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(in.Verifier))
	if err != nil {
		s.fail(w, r, domain.Wrap(domain.EUNAUTHENTICATED, err, "the identity provider did not accept the sign-in's code"))
		return
	}
	sess, err := s.sessionFrom(ctx, tok, in.Nonce)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := randomID()
	if err := s.saveSession(r.Context(), id, sess); err != nil {
		s.fail(w, r, err)
		return
	}
	http.SetCookie(w, o.cookie(sessionCookie, id, "/", 0))
	next := in.Next
	if next == "" {
		next = landing(sess)
	}
	http.Redirect(w, r, next, http.StatusFound)
}

// sessionFrom checks the ID token of tok (and its nonce, when not "": a
// refresh carries none) and makes the session it opens.
func (s *Server) sessionFrom(ctx context.Context, tok *oauth2.Token, nonce string) (session, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return session{}, domain.Errorf(domain.EUNAUTHENTICATED, "the identity provider sent no ID token")
	}
	p, idTok, err := s.SSO.OIDC.verify(ctx, raw)
	if err != nil {
		return session{}, err
	}
	if nonce != "" && subtle.ConstantTimeCompare([]byte(idTok.Nonce), []byte(nonce)) != 1 {
		return session{}, domain.Errorf(domain.EUNAUTHENTICATED, "the ID token's nonce is not this sign-in's")
	}
	var claims struct {
		Name     string `json:"name"`
		Email    string `json:"email"`
		Verified any    `json:"email_verified"`
	}
	_ = idTok.Claims(&claims)
	email := ""
	if claims.Verified == true || claims.Verified == "true" {
		email = claims.Email
	}
	return session{Subject: p.Actor.ID, Actor: p.Actor.Name, Name: cmp.Or(claims.Name, p.Actor.Name), Email: email, Roles: p.Roles(), Expires: idTok.Expiry.Unix(),
		CSRF: randomID(), Refresh: tok.RefreshToken, SignedIn: s.SSO.now().Unix()}, nil
}

func (s *Server) saveSession(ctx context.Context, id string, sess session) error {
	sealed, err := s.SSO.seal("session", id, sess)
	if err == nil {
		err = s.SSO.Store.Put(ctx, sessionEntry("session", id), sealed)
	}
	if err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, "the session store cannot be reached")
	}
	return nil
}

// errNoSession answers a cookie that opens no session (any more).
var errNoSession = domain.Errorf(domain.EUNAUTHENTICATED, "the session has ended: sign in again")

// loadSession returns the session the request's cookie opens, renewed with
// its refresh token once its ID token has expired; a session that can no
// longer be renewed is ended.
func (s *Server) loadSession(r *http.Request) (string, session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", session{}, errNoSession
	}
	sealed, err := s.SSO.Store.Get(r.Context(), sessionEntry("session", c.Value))
	if err != nil {
		return "", session{}, domain.Wrap(domain.EUNAVAILABLE, err, "the session store cannot be reached")
	}
	var sess session
	if sealed == nil || s.SSO.open("session", c.Value, sealed, &sess) != nil {
		return "", session{}, errNoSession
	}
	if s.SSO.now().Sub(time.Unix(sess.SignedIn, 0)) > MaxSessionAge {
		_ = s.SSO.Store.Delete(r.Context(), sessionEntry("session", c.Value))
		return "", session{}, errNoSession
	}
	if s.SSO.now().Unix() < sess.Expires {
		return c.Value, sess, nil
	}
	if sess.Refresh == "" {
		_ = s.SSO.Store.Delete(r.Context(), sessionEntry("session", c.Value))
		return "", session{}, errNoSession
	}
	cfg, _, err := s.SSO.config()
	if err != nil {
		return "", session{}, err
	}
	ctx := s.SSO.context(r.Context())
	tok, err := cfg.TokenSource(ctx, &oauth2.Token{RefreshToken: sess.Refresh, Expiry: time.Unix(1, 0)}).Token()
	var renewed session
	if err == nil {
		renewed, err = s.sessionFrom(ctx, tok, "")
	}
	if err != nil || renewed.Subject != sess.Subject {
		// Another request (on any instance) may have renewed it a moment
		// ago with the same refresh token, which the provider then
		// replaced: take its renewal rather than sign the person out.
		if again, _ := s.SSO.Store.Get(r.Context(), sessionEntry("session", c.Value)); again != nil {
			var fresh session
			if s.SSO.open("session", c.Value, again, &fresh) == nil && fresh.Subject == sess.Subject && s.SSO.now().Unix() < fresh.Expires {
				return c.Value, fresh, nil
			}
		}
		_ = s.SSO.Store.Delete(r.Context(), sessionEntry("session", c.Value))
		return "", session{}, errNoSession
	}
	renewed.CSRF, renewed.SignedIn = sess.CSRF, sess.SignedIn
	if renewed.Refresh == "" {
		renewed.Refresh = sess.Refresh
	}
	if err := s.saveSession(r.Context(), c.Value, renewed); err != nil {
		return "", session{}, err
	}
	return c.Value, renewed, nil
}

// sessionPrincipal authenticates a request by its session cookie. A
// request that may change anything must come from PublicURL's origin and
// carry the session's CSRF token.
func (s *Server) sessionPrincipal(r *http.Request) (domain.Principal, error) {
	_, sess, err := s.loadSession(r)
	if err != nil {
		return domain.Principal{}, err
	}
	if !safeMethod(r.Method) {
		if err := s.SSO.sameOrigin(r); err != nil {
			return domain.Principal{}, err
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get(csrfHeader)), []byte(sess.CSRF)) != 1 {
			return domain.Principal{}, domain.Errorf(domain.EFORBIDDEN, "a change made with the session cookie needs the session's %s header", csrfHeader)
		}
	}
	p := domain.PersonPrincipal(sess.Subject, sess.Actor, sess.Roles)
	p.ExpiresAt = time.Unix(sess.Expires, 0)
	return p, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// sameOrigin refuses a request whose Origin is not PublicURL's.
func (o *SSO) sameOrigin(r *http.Request) error {
	want := o.PublicURL.Scheme + "://" + o.PublicURL.Host
	if got := r.Header.Get("Origin"); got != want {
		return domain.Errorf(domain.EFORBIDDEN, "a change made with the session cookie must come from %s", want)
	}
	return nil
}

// sessionInfo answers GET /v1/session: who is signed in, the orgs they
// manage and those they only belong to, and the CSRF token the page sends
// with every change.
func (s *Server) sessionInfo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	_, sess, err := s.loadSession(r)
	if errors.Is(err, errNoSession) {
		writeJSON(w, http.StatusOK, map[string]any{"signed_in": false, "sign_in_url": "/auth/login"})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	manages, member := []string{}, []string{}
	for org, role := range sess.Roles {
		if role == domain.RoleManager {
			manages = append(manages, org)
		} else {
			member = append(member, org)
		}
	}
	slices.Sort(manages)
	slices.Sort(member)
	writeJSON(w, http.StatusOK, map[string]any{
		"signed_in": true, "subject": sess.Subject, "name": sess.Name, "email": sess.Email,
		"manages": manages, "member_of": member, "csrf_token": sess.CSRF,
		"expires_at": time.Unix(sess.Expires, 0).UTC().Format(time.RFC3339), "renewable": sess.Refresh != "",
	})
}

// logout ends the session (POST /auth/logout, from the page, with the
// CSRF token) and sends the browser to the provider's sign-out when it
// has one.
func (s *Server) ssoLogout(w http.ResponseWriter, r *http.Request) {
	o := s.SSO
	if err := o.sameOrigin(r); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	id, sess, err := s.loadSession(r)
	if err != nil && !errors.Is(err, errNoSession) {
		s.fail(w, r, err)
		return
	}
	if err == nil {
		token := r.Header.Get(csrfHeader)
		if token == "" {
			token = r.PostFormValue("csrf_token")
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(sess.CSRF)) != 1 {
			s.fail(w, r, domain.Errorf(domain.EFORBIDDEN, "signing out needs the session's CSRF token"))
			return
		}
		if err := o.Store.Delete(r.Context(), sessionEntry("session", id)); err != nil {
			s.fail(w, r, domain.Wrap(domain.EUNAVAILABLE, err, "the session store cannot be reached"))
			return
		}
	}
	http.SetCookie(w, o.cookie(sessionCookie, "", "/", -1))
	next := o.PublicURL.JoinPath("/").String()
	if _, p, err := o.config(); err == nil {
		var meta struct {
			EndSession string `json:"end_session_endpoint"`
		}
		if p.Claims(&meta) == nil && meta.EndSession != "" {
			if u, err := url.Parse(meta.EndSession); err == nil {
				v := u.Query()
				// client_id rather than id_token_hint: no token in a URL.
				v.Set("client_id", o.ClientID)
				v.Set("post_logout_redirect_uri", next)
				u.RawQuery = v.Encode()
				next = u.String()
			}
		}
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		// The page signs out with fetch, and goes on from there itself.
		writeJSON(w, http.StatusOK, map[string]any{"signed_out": true, "next": next})
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// printableText keeps at most n visible ASCII characters of what a
// provider (or whoever crafted the URL) wrote.
func printableText(s string, n int) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() == n {
			break
		}
		if c >= 0x20 && c < 0x7f {
			b.WriteRune(c)
		}
	}
	return b.String()
}
