package http

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/usage"
)

// Limit is a rate per client address: Per events per Every, in bursts of
// up to Burst. A zero Limit does not limit.
type Limit struct {
	Per   int
	Every time.Duration
	Burst int
}

// addrLimiter keeps one token bucket per client (clientKey: an IPv4
// address or an IPv6 /64), at most max of them, so that its memory stays
// bounded however many addresses come.
//
// A bucket that has refilled to its burst is the same as a new one, so
// forgetting it loses nothing: that is done once a minute, and when the
// table is full and a new client comes, at most once a second. While the
// table is still full, every client it does not hold shares one overflow
// bucket: an attacker who sprays addresses (an IPv6 /48 holds 65,536 /64s)
// gets one more budget, not one per address, and the clients already
// tracked keep theirs. The price is paid by new clients during such a
// spray, who share that overflow budget with the attacker.
type addrLimiter struct {
	limit rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu       sync.Mutex
	buckets  map[netip.Addr]*rate.Limiter
	overflow *rate.Limiter
	swept    time.Time
}

// DefaultRateLimitClients is how many clients each limit tracks unless
// configured: about 10 MiB of buckets.
const DefaultRateLimitClients = 65536

// Refilled buckets are forgotten every sweepEvery, and when the table is
// full and a new client comes, at most every sweepWhenFull, so that a
// spray of addresses cannot make every request walk the table.
const (
	sweepEvery    = time.Minute
	sweepWhenFull = time.Second
)

func newAddrLimiter(l Limit, clients int, now func() time.Time) *addrLimiter {
	if l.Per <= 0 || l.Every <= 0 {
		return nil
	}
	burst := l.Burst
	if burst <= 0 {
		burst = l.Per
	}
	if clients <= 0 {
		clients = DefaultRateLimitClients
	}
	limit := rate.Limit(float64(l.Per) / l.Every.Seconds())
	return &addrLimiter{
		limit: limit, burst: burst, max: clients, now: now,
		buckets: map[netip.Addr]*rate.Limiter{}, overflow: rate.NewLimiter(limit, burst), swept: now(),
	}
}

func (a *addrLimiter) get(client netip.Addr, now time.Time) *rate.Limiter {
	if now.Sub(a.swept) >= sweepEvery {
		a.sweep(now)
	}
	if b := a.buckets[client]; b != nil {
		return b
	}
	if len(a.buckets) >= a.max && now.Sub(a.swept) >= sweepWhenFull {
		a.sweep(now)
	}
	if len(a.buckets) >= a.max {
		return a.overflow
	}
	b := rate.NewLimiter(a.limit, a.burst)
	a.buckets[client] = b
	return b
}

// sweep forgets the buckets that have refilled: each is as good as new.
func (a *addrLimiter) sweep(now time.Time) {
	full := float64(a.burst)
	for k, b := range a.buckets {
		if b.TokensAt(now) >= full {
			delete(a.buckets, k)
		}
	}
	a.swept = now
}

// take spends a token of the client; when there is none it returns how
// long until there is one.
func (a *addrLimiter) take(client netip.Addr) (ok bool, retry time.Duration) {
	return a.check(client, true)
}

// exhausted reports, without spending, whether the client has no token left.
func (a *addrLimiter) exhausted(client netip.Addr) (bool, time.Duration) {
	ok, retry := a.check(client, false)
	return !ok, retry
}

func (a *addrLimiter) check(client netip.Addr, spend bool) (bool, time.Duration) {
	if a == nil {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	lim := a.get(client, now)
	if spend && lim.AllowN(now, 1) || !spend && lim.TokensAt(now) >= 1 {
		return true, 0
	}
	r := lim.ReserveN(now, 1)
	defer r.CancelAt(now)
	return false, r.DelayFrom(now)
}

// clientKey names the client a request came from, as the limits count
// clients: an IPv4 address; an IPv6 address's /64, since one host, or
// one customer of a provider, is routinely given a whole /64; an
// IPv4-mapped IPv6 address as the IPv4 address it maps. Forwarded headers
// are not trusted: behind a proxy, every client shares the proxy's budget.
// A peer address that does not parse (not TCP) is the zero Addr, one
// client for all such.
func clientKey(r *http.Request) netip.Addr { return usage.ClientAddress(r.RemoteAddr) }

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
		if ok, retry := s.verifyLimiter.take(clientKey(r)); !ok {
			s.rateLimited(w, r, retry, "verifications")
			return
		}
		next.ServeHTTP(w, r)
	})
}
