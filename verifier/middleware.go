package verifier

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
)

// Identity is who a request authenticated as.
type Identity struct {
	OrgID string
	KeyID string
	Name  string
	// Scopes is shared with the index and with every key of the same
	// scopes: read it (HasScope), copy it to change it.
	Scopes []string
}

// HasScope reports whether the key holds scope.
func (id Identity) HasScope(scope string) bool { return slices.Contains(id.Scopes, scope) }

type ctxKey struct{}

// FromContext returns the identity Middleware put in a request's context.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Middleware lets through requests carrying a valid key, in
// `Authorization: Bearer <key>` or `X-API-Key: <key>`, and puts its Identity
// in the request's context. Others get 401 with a JSON error naming the
// verdict (never the key); while the verifier cannot vouch for any key
// (Unavailable: not ready, or stale past Options.MaxStaleness), 503 with
// Retry-After, so that clients retry rather than give up.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-API-Key")
		if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") {
			key = strings.TrimSpace(cred)
		}
		if key == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "send Authorization: Bearer <key> or X-API-Key")
			return
		}
		res := v.VerifyFrom(key, CallerOf(r))
		if res.Code == Unavailable {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "unavailable", "keys cannot be checked right now: the verifier is not current with keyledger's stream")
			return
		}
		if !res.Valid() {
			w.Header().Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthenticated", "key is not valid ("+res.Code+")")
			return
		}
		id := Identity{OrgID: res.Key.OrgID, KeyID: res.Key.ID, Name: res.Key.Name, Scopes: res.Key.Scopes}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, id)))
	})
}

// RequireScope answers 403 unless the authenticated key holds scope. Use it
// inside Middleware.
func RequireScope(scope string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, ok := FromContext(r.Context())
			if !ok {
				writeError(w, http.StatusUnauthorized, "unauthenticated", "no authenticated key")
				return
			}
			if !id.HasScope(scope) {
				writeError(w, http.StatusForbidden, "forbidden", "this key lacks the scope "+scope)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": message}})
}
