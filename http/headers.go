package http

import (
	"net/http"
	"slices"
	"strings"
)

// Header values set on every answer, made once: each answer's header map
// shares them (a later Add appends to a copy, since each has no spare
// capacity).
var (
	nosniff      = []string{"nosniff"}
	frameDeny    = []string{"DENY"}
	noReferrer   = []string{"no-referrer"}
	cspNone      = []string{"default-src 'none'; frame-ancestors 'none'"}
	sameOrigin   = []string{"same-origin"}
	hsts         = []string{"max-age=63072000"}
	noStore      = []string{"no-store"}
	jsonType     = []string{"application/json"}
	retryAfter1s = []string{"1"}
)

// securityHeaders sets the usual hardening headers on every answer. The
// API serves JSON only, so nothing may be framed, sniffed or loaded.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["X-Content-Type-Options"] = nosniff
		h["X-Frame-Options"] = frameDeny
		h["Referrer-Policy"] = noReferrer
		h["Content-Security-Policy"] = cspNone
		h["Cross-Origin-Resource-Policy"] = sameOrigin
		if r.TLS != nil {
			h["Strict-Transport-Security"] = hsts
		}
		next.ServeHTTP(w, r)
	})
}

// cors allows the configured origins, and no other, to call the API from a
// browser. With none configured it does nothing: browsers then refuse
// cross-origin calls, the safe default.
func cors(origins []string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if len(origins) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" || !slices.Contains(origins, origin) {
				next.ServeHTTP(w, r)
				return
			}
			h := w.Header()
			h.Add("Vary", "Origin")
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "ETag, X-Keyledger-Seq, Retry-After, Idempotent-Replayed")
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Set("Access-Control-Allow-Methods", strings.Join([]string{"GET", "POST", "DELETE"}, ", "))
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key")
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
