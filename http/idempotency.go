package http

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// idempotency remembers the successful answers to writes that carried an
// Idempotency-Key, so that a retried request gets the same answer instead
// of a second key. A create's answer holds its secret: that is the point
// (the client lost the first answer), so entries live in memory only, on
// this instance, for a bounded time and number.
type idempotency struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]*idemEntry
	order   []idemSlot // oldest first, for eviction
}

type idemSlot struct {
	slot string
	e    *idemEntry
}

type idemEntry struct {
	bodySum [sha256.Size]byte
	done    bool
	at      time.Time
	status  int
	header  http.Header
	body    []byte
}

func newIdempotency(ttl time.Duration, max int) *idempotency {
	return &idempotency{ttl: ttl, max: max, entries: map[string]*idemEntry{}}
}

const maxIdemKeyLen = 255

// idempotent answers a repeated Idempotency-Key from memory. The same key
// with another body, or while the first request is still running, is a
// conflict.
func (s *Server) idempotent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ik := r.Header.Get("Idempotency-Key")
		if ik == "" {
			next.ServeHTTP(w, r)
			return
		}
		if len(ik) > maxIdemKeyLen || !visibleASCII(ik) {
			s.fail(w, r, domain.Errorf(domain.EINVALID, "Idempotency-Key must be 1 to %d visible ASCII characters", maxIdemKeyLen))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			s.fail(w, r, bodyError(err))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		slot := caller(r.Context()).Actor.Kind + ":" + caller(r.Context()).Actor.ID + " " + r.Method + " " + r.URL.Path + " " + ik
		e, fresh := s.idem.begin(slot, sha256.Sum256(body), time.Now())
		switch {
		case e == nil:
			s.fail(w, r, domain.Errorf(domain.ECONFLICT, "Idempotency-Key was used with another request"))
		case !fresh && !e.done:
			s.fail(w, r, domain.Errorf(domain.ECONFLICT, "a request with this Idempotency-Key is still running"))
		case !fresh:
			for k, v := range e.header {
				w.Header()[k] = v
			}
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(e.status)
			_, _ = w.Write(e.body)
		default:
			rec := &recorder{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(rec, r)
			s.idem.finish(slot, rec)
		}
	})
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// begin returns the entry of slot: a new one (fresh), the earlier one, or
// nil when the earlier one was for another body.
func (c *idempotency) begin(slot string, sum [sha256.Size]byte, now time.Time) (e *idemEntry, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	if e := c.entries[slot]; e != nil {
		if e.bodySum != sum {
			return nil, false
		}
		return e, false
	}
	e = &idemEntry{bodySum: sum, at: now}
	c.entries[slot] = e
	c.order = append(c.order, idemSlot{slot, e})
	return e, true
}

// finish keeps a 2xx answer; any other answer frees the slot for a retry.
func (c *idempotency) finish(slot string, rec *recorder) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[slot]
	if e == nil {
		return
	}
	if rec.status < 200 || rec.status > 299 {
		delete(c.entries, slot)
		return
	}
	e.done, e.status, e.header, e.body = true, rec.status, rec.Header().Clone(), rec.body.Bytes()
}

func (c *idempotency) expire(now time.Time) {
	drop := 0
	for _, o := range c.order {
		if now.Sub(o.e.at) < c.ttl && len(c.order)-drop <= c.max {
			break
		}
		if c.entries[o.slot] == o.e {
			delete(c.entries, o.slot)
		}
		drop++
	}
	c.order = c.order[drop:]
}

// recorder passes an answer through and keeps a copy of it.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}
