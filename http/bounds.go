package http

import (
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// Defaults of the bounds below, when the Server's fields are zero.
const (
	DefaultMaxInFlight          = 1024
	DefaultMaxStreams           = 256
	DefaultMaxWaiting           = 1024
	DefaultMaxInFlightPerClient = 64
	DefaultReadBodyTimeout      = 10 * time.Second
)

// bound keeps any one kind of client from taking what the others need.
// In order:
//
//   - a request with a body has ReadBodyTimeout to send all of it;
//   - a client (clientKey) has at most MaxInFlightPerClient requests and
//     streams under way, past which it gets 429 at once;
//   - the body is read, at most MaxBodyBytes, before any slot is taken, so
//     that a body sent a byte at a time holds nothing others need;
//   - then the request takes one of MaxInFlight slots, a stream one of
//     MaxStreams, or gets 503 at once. A request that waits for a
//     sequence gives its slot back meanwhile (awaitApplied).
//
// Health checks and metrics take no slot and are never refused: a busy
// instance is alive, must not be restarted for it, and is just when its
// metrics matter.
func (s *Server) bound(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
		if hasBody {
			// Left in place on every refusal below, so that the server's
			// own reading of what remains of the body is bounded too.
			setReadDeadline(w, time.Now().Add(s.ReadBodyTimeout))
		}
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics" {
			next.ServeHTTP(w, r)
			return
		}
		client := clientKey(r)
		if !s.perClient.take(client) {
			s.rateLimited(w, r, time.Second, "requests at once")
			return
		}
		defer s.perClient.give(client)
		if hasBody && s.bodyLimit(r) > MaxBodyBytes {
			// A large body is read whole before its signature can be
			// checked: only a few at once, whoever sends them.
			select {
			case s.largeBodies <- struct{}{}:
				defer func() { <-s.largeBodies }()
			default:
				s.fail(w, r, domain.Errorf(domain.EUNAVAILABLE, "too many large reports at once; retry shortly"))
				return
			}
		}
		if hasBody {
			body, err := s.readBody(r)
			if err != nil {
				s.fail(w, r, err)
				return
			}
			defer body.free()
			r.Body = body
			// No need to clear the deadline: net/http does, as the body
			// reaches its end, for its own read in the background
			// (TestAttackSlowBodies holds it to that).
		}
		pool := s.inFlight
		if strings.HasSuffix(r.URL.Path, "/events/stream") {
			pool = s.streams
		}
		select {
		case pool <- struct{}{}:
		default:
			s.fail(w, r, domain.Errorf(domain.EUNAVAILABLE, "too many requests at once; retry shortly"))
			return
		}
		st := stateOf(r.Context())
		if st == nil {
			st = &requestState{} // not through withRequestID: nobody gives the slot back
		}
		st.pool, st.held = pool, true
		defer st.releaseSlot()
		next.ServeHTTP(w, r)
	})
}

// setReadDeadline does what http.ResponseController's SetReadDeadline
// does, unwrapping w until it finds the connection's writer, without the
// allocation that one makes on every call (Go 1.26): this is on the path
// of every verification.
func setReadDeadline(w http.ResponseWriter, deadline time.Time) {
	for {
		if d, ok := w.(interface{ SetReadDeadline(time.Time) error }); ok {
			_ = d.SetReadDeadline(deadline)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// releaseSlot gives the request's slot back, if it holds one.
func (st *requestState) releaseSlot() {
	if st != nil && st.held {
		st.held = false
		<-st.pool
	}
}

// retakeSlot takes a slot again after a wait; false when none is free.
func (st *requestState) retakeSlot() bool {
	if st == nil || st.pool == nil || st.held {
		return true
	}
	select {
	case st.pool <- struct{}{}:
		st.held = true
		return true
	default:
		return false
	}
}

// prereadBody is a request body read whole before its request took a
// slot. Its buffers are pooled: the verify path reads one per request.
type prereadBody struct {
	b   []byte
	off int
}

func (p *prereadBody) Read(b []byte) (int, error) {
	if p.off >= len(p.b) {
		return 0, io.EOF
	}
	n := copy(b, p.b[p.off:])
	p.off += n
	return n, nil
}

func (p *prereadBody) Close() error { return nil }

// free returns a small buffer to the pool; a large one is left to the
// collector, so that the pool does not keep 64 KiB per request.
func (p *prereadBody) free() {
	if cap(p.b) <= 4<<10 {
		prereadBodies.Put(p)
	}
}

var prereadBodies = sync.Pool{New: func() any { return &prereadBody{b: make([]byte, 0, 1<<10)} }}

// readBody reads r's body whole, at most MaxBodyBytes, within the read
// deadline set by bound. Returns ETOOLARGE, or EINVALID when the body did
// not arrive in time or could not be read.
func (s *Server) readBody(r *http.Request) (*prereadBody, error) {
	limit := s.bodyLimit(r)
	if r.ContentLength > limit {
		return nil, bodyTooLarge(limit)
	}
	p := prereadBodies.Get().(*prereadBody)
	p.b, p.off = p.b[:0], 0
	for {
		if len(p.b) == cap(p.b) {
			grown := make([]byte, len(p.b), min(2*cap(p.b), int(limit)+1))
			copy(grown, p.b)
			p.b = grown
		}
		n, err := r.Body.Read(p.b[len(p.b):cap(p.b)])
		p.b = p.b[:len(p.b)+n]
		switch {
		case len(p.b) > int(limit):
			p.free()
			return nil, bodyTooLarge(limit)
		case errors.Is(err, io.EOF):
			return p, nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.free()
			return nil, domain.Wrap(domain.EINVALID, err, "the request body did not arrive within "+s.ReadBodyTimeout.String())
		case err != nil:
			p.free()
			return nil, domain.Wrap(domain.EINVALID, err, "the request body could not be read")
		}
	}
}

func bodyTooLarge(limit int64) error {
	return domain.Errorf(domain.ETOOLARGE, "request body is over %d bytes", limit)
}

// bodyLimit is the most a request's body may hold: MaxBodyBytes, but for
// GitHub's batch of reported tokens, when that route is served and the
// request carries its signature (an unsigned one is refused anyway, and
// need not be read whole first).
func (s *Server) bodyLimit(r *http.Request) int64 {
	if s.GitHubKeys != nil && r.Method == http.MethodPost && r.URL.Path == githubScanningPath && r.Header.Get("Github-Public-Key-Signature") != "" {
		return MaxLeakBatchBytes
	}
	return MaxBodyBytes
}

// clientCounts counts the requests each client has under way, so that
// one client cannot take every slot. It holds only clients with a request
// under way: its size is bounded by the connections served.
type clientCounts struct {
	max int // < 1: no bound

	mu sync.Mutex
	n  map[netip.Addr]int
}

func newClientCounts(max int) *clientCounts {
	return &clientCounts{max: max, n: map[netip.Addr]int{}}
}

func (c *clientCounts) take(client netip.Addr) bool {
	if c.max < 1 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[client] >= c.max {
		return false
	}
	c.n[client]++
	return true
}

func (c *clientCounts) give(client netip.Addr) {
	if c.max < 1 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[client] <= 1 {
		delete(c.n, client)
		return
	}
	c.n[client]--
}
