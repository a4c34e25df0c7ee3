package http

import (
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
)

// writeLimited spends one write token of the calling credential's owner
// (domain.WriteOwner: a person's subject; a key's minter, back to the
// person or the first key) on a create, a rotation or a leak report, and
// gives it back when the write answers anything but 2xx, so that what the
// limit bounds is what is appended: one key or person cannot flood the
// stream, and with it every instance's memory and every verifier, while a
// client retrying through an outage (503) or sending bad requests is not
// locked out afterwards. Revocations are never limited: they only ever
// take access away, a key is revoked at most once, and an incident may
// need many at once. An Idempotency-Key replay is answered before it gets
// here and spends nothing.
func (s *Server) writeLimited(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.writeBudgets == nil {
			next.ServeHTTP(w, r)
			return
		}
		a, err := domain.WriteOwner(caller(r.Context()).Actor, chi.URLParam(r, "org"), s.Listing.Get)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		who := a.Kind + ":" + a.ID
		if ok, retry := s.writeBudgets.take(who); !ok {
			setRetryAfter(w, retry)
			s.fail(w, r, domain.Errorf(domain.ERATELIMITED, "too many creates and rotations by this credential; retry in %s s", retryAfter(retry)))
			return
		}
		st := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(st, r)
		if st.status < 200 || st.status > 299 {
			s.writeBudgets.give(who)
		}
	})
}

// statusWriter notes the status of an answer it passes on.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(status int) {
	s.status = status
	s.ResponseWriter.WriteHeader(status)
}

// writeBudgets is a token bucket per credential. A bucket that has been
// left alone long enough to fill up is forgotten: a fresh one is the
// same, so memory holds only the credentials that wrote in the last
// refill time.
type writeBudgets struct {
	rate  float64 // tokens a second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*writeBucket
	swept   time.Time
}

type writeBucket struct {
	tokens float64
	last   time.Time
}

func newWriteBudgets(l Limit, now func() time.Time) *writeBudgets {
	if l.Per <= 0 || l.Every <= 0 {
		return nil
	}
	burst := l.Burst
	if burst <= 0 {
		burst = l.Per
	}
	return &writeBudgets{rate: float64(l.Per) / l.Every.Seconds(), burst: float64(burst), now: now, buckets: map[string]*writeBucket{}}
}

// bucket returns who's bucket refilled to now; the caller holds mu.
func (b *writeBudgets) bucket(who string, now time.Time) *writeBucket {
	full := time.Duration(b.burst / b.rate * float64(time.Second))
	if now.Sub(b.swept) > full {
		for k, w := range b.buckets {
			if now.Sub(w.last) > full {
				delete(b.buckets, k)
			}
		}
		b.swept = now
	}
	w := b.buckets[who]
	if w == nil {
		w = &writeBucket{tokens: b.burst, last: now}
		b.buckets[who] = w
	}
	if d := now.Sub(w.last); d > 0 {
		w.tokens = min(b.burst, w.tokens+d.Seconds()*b.rate)
		w.last = now
	}
	return w
}

// take spends a token of who; when there is none it says how long until
// there is one.
func (b *writeBudgets) take(who string) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.bucket(who, b.now())
	if w.tokens < 1 {
		return false, time.Duration(math.Ceil((1 - w.tokens) / b.rate * float64(time.Second)))
	}
	w.tokens--
	return true, 0
}

// give returns a token taken for a write that appended nothing.
func (b *writeBudgets) give(who string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.bucket(who, b.now())
	w.tokens = min(b.burst, w.tokens+1)
}

// setRetryAfter says, in whole seconds, when to try again.
func setRetryAfter(w http.ResponseWriter, retry time.Duration) {
	w.Header().Set("Retry-After", retryAfter(retry))
}
