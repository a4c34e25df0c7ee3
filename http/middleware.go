package http

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/keyledger/keyledger/domain"
)

type ctxKey int

const (
	ctxCaller ctxKey = iota
	ctxKeyID
)

// instrument counts and times every request for /metrics and writes one
// access line for it. Keys travel in headers and bodies, which are never
// logged; a client that puts one in its path or query string anyway finds
// it masked there (maskKeys).
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		took := time.Since(start)
		route := s.routePattern(r)
		s.metrics.observe(r.Method, route, ww.Status(), took)
		level := slog.LevelInfo
		if route == "/v1/verify" && ww.Status() == http.StatusOK {
			// Verifications come by the thousand a second: one line each
			// would cost more than the verification. Debug shows them.
			level = slog.LevelDebug
		}
		if !s.log.Enabled(r.Context(), level) {
			return
		}
		attrs := [...]slog.Attr{
			slog.String("method", r.Method), slog.String("path", maskKeys(r.URL.Path)), slog.String("route", route),
			slog.Int("status", ww.Status()), slog.Int("bytes", ww.BytesWritten()), slog.Duration("duration", took),
			{},
		}
		n := len(attrs) - 1
		if r.URL.RawQuery != "" {
			attrs[n], n = slog.String("query", loggedQuery(r.URL.RawQuery)), n+1
		}
		s.log.LogAttrs(r.Context(), level, "request", attrs[:n]...)
	})
}

// routePattern is the pattern of the route that served r. A request that a
// middleware answered never reached its route: before routing (a 503 of
// the in-flight bound, a CORS preflight) the pattern is empty, in a group
// (a 401 of /v1/orgs/{org}/...) it ends in "/*". Then look the route up.
func (s *Server) routePattern(r *http.Request) string {
	route := chi.RouteContext(r.Context()).RoutePattern()
	if route != "" && !strings.HasSuffix(route, "/*") {
		return route
	}
	if found := s.mux.Find(chi.NewRouteContext(), r.Method, r.URL.Path); found != "" {
		route = strings.TrimSuffix(found, "/")
	}
	return route
}

// recoverer turns a panic into a 500 with no detail and a logged cause.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.fail(w, r, domain.Wrap(domain.EINTERNAL, panicError{v}, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type panicError struct{ v any }

func (p panicError) Error() string { return "panic: " + strings.TrimSpace(toString(p.v)) }

func toString(v any) string {
	if err, ok := v.(error); ok {
		return err.Error()
	}
	if s, ok := v.(string); ok {
		return s
	}
	return "non-string panic value"
}

// bearer returns the credential of an Authorization: Bearer header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

// authenticate turns the request's bearer credential into a principal: a
// key, checked through the verify index (so a revoked key stops as soon as
// its revocation is applied), or a JWT from the configured issuer. Returns
// EUNAUTHENTICATED, or EUNAVAILABLE while the identity provider is unknown.
func (s *Server) authenticate(r *http.Request) (domain.Principal, error) {
	cred, ok := bearer(r)
	switch {
	case !ok && s.SSO != nil && r.Header.Get("Authorization") == "" && hasCookie(r, sessionCookie):
		return s.sessionPrincipal(r)
	case !ok:
		return domain.Principal{}, domain.Errorf(domain.EUNAUTHENTICATED, "send Authorization: Bearer <management key or token>")
	case domain.WellFormed(cred):
		k, until, err := s.bearerKey(r)
		p := domain.KeyPrincipal(k)
		p.ExpiresAt = until
		return p, err
	case s.OIDC != nil && looksLikeJWT(cred):
		return s.OIDC.Verify(r.Context(), cred)
	}
	return domain.Principal{}, domain.Errorf(domain.EUNAUTHENTICATED, "credential is neither a key nor a token of the configured issuer")
}

// bearerKey returns the key of Authorization: Bearer <key> if it is valid
// now, and until when that value is (zero: no end yet), and records its
// use. Returns EUNAUTHENTICATED.
func (s *Server) bearerKey(r *http.Request) (domain.Key, time.Time, error) {
	cred, _ := bearer(r)
	now := s.Now()
	res := s.Index.Verify(cred, now)
	s.recordOutcome(r, res, now)
	if !res.Valid() {
		return domain.Key{}, time.Time{}, domain.Errorf(domain.EUNAUTHENTICATED, "send Authorization: Bearer <valid key> (got %s)", res.Code)
	}
	s.Usage.Touch(res.Key.OrgID, res.Key.ID, now)
	return res.Key, res.ExpiresAt, nil
}

// throttled runs an authentication for the client address: an address
// whose budget of failed authentications is spent gets 429 without its
// credential being looked at, and each failure spends one. It answers the
// failure itself and reports whether to go on.
func (s *Server) throttled(w http.ResponseWriter, r *http.Request, auth func() error) bool {
	client := clientKey(r)
	if blocked, retry := s.authLimiter.exhausted(client); blocked {
		s.rateLimited(w, r, retry, "failed authentications")
		return false
	}
	if err := auth(); err != nil {
		if domain.ErrorCode(err) == domain.EUNAUTHENTICATED {
			s.authLimiter.take(client)
		}
		s.fail(w, r, err)
		return false
	}
	return true
}

// manager lets through only a manager of {org}, authenticated under the
// failed-authentication budget of the client address.
func (s *Server) manager(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p domain.Principal
		if !s.throttled(w, r, func() (err error) { p, err = s.authenticate(r); return err }) {
			return
		}
		org := chi.URLParam(r, "org")
		if err := domain.ValidateOrgID(org); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := p.MayManage(org); err != nil {
			s.fail(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxCaller, p)))
	})
}

// authenticated lets through any caller the service can authenticate
// (failures count against the address's limit, as everywhere), with the
// principal in the context; what it may do is its handler's to say.
func (s *Server) authenticated(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p domain.Principal
		if !s.throttled(w, r, func() (err error) { p, err = s.authenticate(r); return err }) {
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxCaller, p)))
	})
}

func caller(ctx context.Context) domain.Principal {
	p, _ := ctx.Value(ctxCaller).(domain.Principal)
	return p
}

// current lets a request reach the projections only when they can be
// trusted: once they have replayed the stream as it stood at start (until
// then a revocation may sit in the tail not yet applied, and its key would
// answer VALID), and, with MaxStaleness, while they have not fallen
// behind the stream for longer than that. Otherwise 503 with Retry-After:
// the instance fails closed.
func (s *Server) current(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.Runner.Ready() {
			s.fail(w, r, domain.Errorf(domain.EUNAVAILABLE, "this instance is still replaying the event stream (applied up to sequence %d); retry shortly", s.Runner.Applied()))
			return
		}
		if s.MaxStaleness > 0 {
			if behind := time.Since(s.Runner.CurrentAt()); behind > s.MaxStaleness {
				s.fail(w, r, domain.Errorf(domain.EUNAVAILABLE, "this instance has not been current with the event stream for %ds, longer than it may answer from memory; retry shortly", int(behind.Seconds())))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// staleness marks every answer given while the event store is unreachable
// with how long it has been: reads and verifications then come from memory
// and may miss what happened since.
func (s *Server) staleness(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Unreachable != nil {
			if since := s.Unreachable(); !since.IsZero() {
				w.Header().Set("X-Keyledger-Stale-Seconds", strconv.Itoa(int(time.Since(since).Seconds())))
				w.Header().Set("X-Keyledger-Applied-Seq", strconv.FormatUint(s.Runner.Applied(), 10))
			}
		}
		next.ServeHTTP(w, r)
	})
}

// bounded gives a write at most CommandTimeout with the event store: when
// NATS is unreachable the write answers 503 with Retry-After, never hangs.
func (s *Server) bounded(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.CommandTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// keyID validates {id} before any handler sees it.
func (s *Server) keyID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := chi.URLParam(r, "id")
		if err := domain.ValidateKeyID(id); err != nil {
			s.fail(w, r, err)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKeyID, id)))
	})
}

func orgAndKey(r *http.Request) (org, id string) {
	id, _ = r.Context().Value(ctxKeyID).(string)
	return chi.URLParam(r, "org"), id
}

func hasCookie(r *http.Request, name string) bool {
	_, err := r.Cookie(name)
	return err == nil
}
