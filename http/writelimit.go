package http

import (
	"net/http"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// writeLimited spends one write token of the calling credential (its
// actor: a key's id, a person's subject), on creates and rotations: one
// key or person cannot flood the stream, and with it every instance's
// memory and every verifier. Revocations are never limited: they only
// ever take access away, a key is revoked at most once, and an incident
// may need many at once. An Idempotency-Key replay is answered before it
// gets here and spends nothing.
func (s *Server) writeLimited(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := caller(r.Context()).Actor
		if ok, retry := s.writeLimiter.take(a.Kind + ":" + a.ID); !ok {
			setRetryAfter(w, retry)
			s.fail(w, r, domain.Errorf(domain.ERATELIMITED, "too many creates and rotations by this credential; retry in %s s", retryAfter(retry)))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// setRetryAfter says, in whole seconds, when to try again.
func setRetryAfter(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", retryAfter(retry))
}
