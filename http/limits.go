package http

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyledger/keyledger/domain"
)

// Limit is a rate per client address: Per events per Every, in bursts of
// up to Burst. A zero Limit does not limit.
type Limit struct {
	Per   int
	Every time.Duration
	Burst int
}

// addrLimiter keeps one token bucket per client address, forgetting those
// idle for a while so that its memory stays bounded.
type addrLimiter struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

const forgetAfter = 10 * time.Minute

func newAddrLimiter(l Limit, now func() time.Time) *addrLimiter {
	if l.Per <= 0 || l.Every <= 0 {
		return nil
	}
	burst := l.Burst
	if burst <= 0 {
		burst = l.Per
	}
	return &addrLimiter{
		limit: rate.Limit(float64(l.Per) / l.Every.Seconds()), burst: burst,
		now: now, buckets: map[string]*bucket{},
	}
}

func (a *addrLimiter) get(addr string) *rate.Limiter {
	now := a.now()
	if now.Sub(a.swept) > forgetAfter {
		for k, b := range a.buckets {
			if now.Sub(b.seen) > forgetAfter {
				delete(a.buckets, k)
			}
		}
		a.swept = now
	}
	b := a.buckets[addr]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(a.limit, a.burst)}
		a.buckets[addr] = b
	}
	b.seen = now
	return b.lim
}

// take spends a token of addr; when there is none it returns how long until
// there is one.
func (a *addrLimiter) take(addr string) (ok bool, retry time.Duration) { return a.check(addr, true) }

// exhausted reports, without spending, whether addr has no token left.
func (a *addrLimiter) exhausted(addr string) (bool, time.Duration) {
	ok, retry := a.check(addr, false)
	return !ok, retry
}

func (a *addrLimiter) check(addr string, spend bool) (bool, time.Duration) {
	if a == nil {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	lim := a.get(addr)
	now := a.now()
	if spend && lim.AllowN(now, 1) || !spend && lim.TokensAt(now) >= 1 {
		return true, 0
	}
	r := lim.ReserveN(now, 1)
	defer r.CancelAt(now)
	return false, r.DelayFrom(now)
}

// clientAddr is the address a request came from. Forwarded headers are not
// trusted: behind a proxy, every client shares the proxy's budget.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// rateLimited answers 429 with Retry-After in whole seconds.
func (s *Server) rateLimited(w http.ResponseWriter, r *http.Request, retry time.Duration, what string) {
	setRetryAfter(w, retry)
	s.fail(w, r, domain.Errorf(domain.ERATELIMITED, "too many %s from this address; retry later", what))
}

// retryAfter is a wait in whole seconds, at least one.
func retryAfter(retry time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(retry, time.Second).Seconds())))
}

// verifyLimit spends one verify token of the client's address.
func (s *Server) verifyLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, retry := s.verifyLimiter.take(clientAddr(r)); !ok {
			s.rateLimited(w, r, retry, "verifications")
			return
		}
		next.ServeHTTP(w, r)
	})
}
