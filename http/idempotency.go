package http

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// idempotency remembers the successful answers to writes that carried an
// Idempotency-Key, so that a retried request gets the same answer instead
// of a second key. This is each instance's own cache, in memory, for a
// bounded time and number: the fast path. Across instances the answers
// are shared through Server.Idempotency, sealed (idemshared.go).
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
	answer
}

// answer is a kept answer: what a replay sends.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func newIdempotency(ttl time.Duration, max int) *idempotency {
	return &idempotency{ttl: ttl, max: max, entries: map[string]*idemEntry{}}
}

const maxIdemKeyLen = 255

// idempotent answers a repeated Idempotency-Key with the first answer:
// from this instance's memory, else from the shared bucket. The same key
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
		actor := caller(r.Context()).Actor
		// Per credential, as the shared entry is sealed: another session or
		// token of the same person does not get this one's answer.
		credSum := sha256.Sum256([]byte(s.requestCredential(r)))
		slot := actor.Kind + ":" + actor.ID + " " + hex.EncodeToString(credSum[:8]) + " " + r.Method + " " + r.URL.Path + " " + ik
		sum := sha256.Sum256(body)
		e, fresh := s.idem.begin(slot, sum, time.Now())
		switch {
		case e == nil:
			s.fail(w, r, errIdemOtherRequest)
		case !fresh && !e.done:
			s.fail(w, r, errIdemRunning)
		case !fresh:
			e.replay(w)
		default:
			s.idempotentShared(w, r, next, slot, ik, sum)
		}
	})
}

var (
	errIdemOtherRequest = domain.Errorf(domain.ECONFLICT, "Idempotency-Key was used with another request")
	errIdemRunning      = domain.Errorf(domain.ECONFLICT, "a request with this Idempotency-Key is still running")
)

// runIdempotent serves a request seen for the first time, keeps its
// answer in this instance's memory and hands it to shared (when not nil)
// before the client gets it, so that a retry anywhere finds it.
func (s *Server) runIdempotent(w http.ResponseWriter, r *http.Request, next http.Handler, slot string, shared func(*recorder)) {
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	s.idem.finish(slot, rec.answer())
	if shared != nil {
		shared(rec)
	}
	rec.flush()
}

// replay sends a kept answer again, marked as such.
func (a answer) replay(w http.ResponseWriter) {
	for k, v := range a.header {
		w.Header()[k] = v
	}
	w.Header().Set("Idempotent-Replayed", "true")
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
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
func (c *idempotency) finish(slot string, a answer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[slot]
	if e == nil {
		return
	}
	if a.status < 200 || a.status > 299 {
		delete(c.entries, slot)
		return
	}
	e.done, e.answer = true, a
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

// recorder holds an answer back, status and body, until flush; its
// headers go to the real writer as they are set.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(status int) { r.status = status }

func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }

func (r *recorder) answer() answer {
	return answer{status: r.status, header: r.Header().Clone(), body: bytes.Clone(r.body.Bytes())}
}

func (r *recorder) flush() {
	r.ResponseWriter.WriteHeader(r.status)
	_, _ = r.ResponseWriter.Write(r.body.Bytes())
}
