package http_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
)

// lag holds an instance's projections back: once held, the events after
// a sequence wait until released, as on an instance that has fallen
// behind the stream (another instance wrote them a moment ago).
type lag struct {
	mu    sync.Mutex
	after uint64 // 0: not held
	open  chan struct{}
}

func (l *lag) beforeApply(e domain.Event) {
	l.mu.Lock()
	after, open := l.after, l.open
	l.mu.Unlock()
	if after > 0 && e.Seq > after {
		<-open
	}
}

// hold makes the events after seq wait, until release.
func (l *lag) hold(t *testing.T, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.after, l.open = seq, make(chan struct{})
	t.Cleanup(l.release) // before the instance stops: its feed must not stay blocked
}

func (l *lag) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.after > 0 {
		close(l.open)
		l.after = 0
	}
}

// lagging is an instance that will fall behind, and a second instance on
// the same NATS that writes what the first has not applied yet.
type lagging struct {
	*harness
	lag    *lag
	writer *harness
	admin  string // a management key of acme that the lagging one knows
}

func startLagging(t *testing.T, configure func(*khttp.Server)) *lagging {
	t.Helper()
	env := natstest.StartIn(t, t.TempDir())
	l := &lag{}
	h := instanceOpts(t, env, apitest.Options{Configure: configure, BeforeApply: l.beforeApply})
	lg := &lagging{harness: h, lag: l, writer: instance(t, env, nil)}
	lg.admin = h.bootstrap("acme")
	return lg
}

// fallBehind has the other instance write a key that this one does not
// apply until released, and returns that key's sequence: in the stream,
// not yet here.
func (lg *lagging) fallBehind(t *testing.T) uint64 {
	t.Helper()
	lg.lag.hold(t, lg.env.LastSeq(t))
	k, err := lg.writer.keys.Create(context.Background(), domain.CreateKey{OrgID: "acme", Name: "written elsewhere", By: domain.SystemPrincipal("test", "")})
	if err != nil {
		t.Fatal(err)
	}
	if got := lg.runner.Applied(); got >= k.Key.Version {
		t.Fatalf("the lagging instance applied %d: it does not lag", got)
	}
	return k.Key.Version
}

// patient is a client that gives up after 10 s, so that a request the
// server holds fails the test instead of hanging it.
func patient(local string) *http.Client {
	d := &net.Dialer{}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 100}}
}

// send is h.request through a given client. A transport error (a timeout
// included) is an answer with status 0 and the error as its body, for the
// caller's checks to report in the (sub)test they belong to.
func (h *harness) send(c *http.Client, method, path, token string, body any, headers ...string) response {
	h.t.Helper()
	res, err := c.Do(newRequest(h.t, context.Background(), method, h.srv.URL+path, token, body, headers...))
	if err != nil {
		return response{&http.Response{StatusCode: 0, Header: http.Header{}}, []byte(err.Error())}
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	return response{res, raw}
}

// othersAnswer checks, rounds times, that routes besides the attacked one
// answer 200 at once: a read of the listing, a verification, whoami.
func (lg *lagging) othersAnswer(t *testing.T, c *http.Client, rounds int) {
	t.Helper()
	refused := 0
	for range rounds {
		for _, r := range []struct {
			method, path, token string
			body                any
		}{
			{"GET", "/v1/orgs/acme/keys", lg.admin, nil},
			{"POST", "/v1/verify", "", map[string]string{"key": lg.admin}},
			{"GET", "/v1/whoami", lg.admin, nil},
		} {
			if res := lg.send(c, r.method, r.path, r.token, r.body); res.StatusCode != http.StatusOK {
				refused++
				if refused <= 3 {
					t.Errorf("%s %s during the flood: %d %s", r.method, r.path, res.StatusCode, res.body)
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if refused > 3 {
		t.Errorf("%d requests of other routes refused during the flood in all", refused)
	}
}

// TestAttackMinSeqFlood: a request waiting for ?min_seq, or a write
// waiting for its own event, holds no request slot, and one address
// cannot take all the waiting places either.
func TestAttackMinSeqFlood(t *testing.T) {
	t.Run("TwoHundredAsecondFromOneAddressLeaveOtherRoutesAnswering", func(t *testing.T) {
		lg := startLagging(t, func(s *khttp.Server) {
			s.MaxInFlight, s.MaxWaiting, s.MaxInFlightPerClient = 8, 32, -1
		})
		seq := lg.fallBehind(t)
		c := patient("")
		statuses := map[int]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Go(func() {
			tick := time.NewTicker(5 * time.Millisecond) // 200 a second
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				wg.Go(func() {
					// Unauthenticated: anyone may verify.
					res := lg.send(c, "POST", fmt.Sprintf("/v1/verify?min_seq=%d", seq), "", map[string]string{"key": "x"})
					mu.Lock()
					statuses[res.StatusCode]++
					mu.Unlock()
				})
			}
		})
		time.Sleep(200 * time.Millisecond) // the flood under way
		lg.othersAnswer(t, c, 30)
		close(stop)
		lg.lag.release()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		t.Logf("the flood's answers by status: %v", statuses)
		for status := range statuses {
			if status != http.StatusOK && status != http.StatusServiceUnavailable {
				t.Errorf("a flood request answered %d: want 200 once applied, or 503", status)
			}
		}
	})

	t.Run("WritesWaitingForTheirEventHoldNoSlot", func(t *testing.T) {
		lg := startLagging(t, func(s *khttp.Server) {
			s.MaxInFlight, s.MaxInFlightPerClient, s.WaitTimeout = 2, -1, 10*time.Second
		})
		base := lg.fallBehind(t)
		c := patient("")
		var wg sync.WaitGroup
		const writes = 4
		for i := range writes {
			wg.Go(func() {
				// Committed at once; the answer waits until this instance
				// has applied it, which it cannot while it lags. A write
				// refused at its arrival, while the others append, never
				// ran: it is sent again.
				for {
					res := lg.send(c, "POST", "/v1/orgs/acme/keys", lg.admin, map[string]any{"name": fmt.Sprint("w", i)})
					if res.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(res.body), "too many requests at once") {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					if res.StatusCode != http.StatusCreated {
						t.Errorf("a write on the lagging instance: %d %s", res.StatusCode, res.body)
					}
					return
				}
			})
		}
		for lg.env.LastSeq(t) < base+writes {
			time.Sleep(10 * time.Millisecond) // until every write is committed, and waiting
		}
		time.Sleep(50 * time.Millisecond)
		lg.othersAnswer(t, c, 5)
		lg.lag.release()
		wg.Wait()
	})

	t.Run("OneAddressCannotTakeEveryWaitingPlace", func(t *testing.T) {
		lg := startLagging(t, func(s *khttp.Server) {
			s.MaxInFlight, s.MaxWaiting, s.MaxInFlightPerClient, s.WaitTimeout = 16, 16, 8, 10*time.Second
		})
		seq := lg.fallBehind(t)
		flood, other := patient("127.0.0.1"), patient("127.0.0.2")
		var wg sync.WaitGroup
		for range 40 {
			wg.Go(func() {
				lg.send(flood, "POST", fmt.Sprintf("/v1/verify?min_seq=%d", seq), "", map[string]string{"key": "x"})
			})
		}
		time.Sleep(300 * time.Millisecond) // the flood waiting
		done := make(chan response, 1)
		go func() { done <- lg.send(other, "GET", fmt.Sprintf("/v1/whoami?min_seq=%d", seq), lg.admin, nil) }()
		time.Sleep(200 * time.Millisecond) // the other client's read waiting too
		lg.lag.release()
		if res := <-done; res.StatusCode != http.StatusOK {
			t.Errorf("another address's read of min_seq=%d during the flood: %d %s, want 200 once applied", seq, res.StatusCode, res.body)
		}
		wg.Wait()
	})
}

// TestAttackMinSeqBeyondTheStream: a sequence the stream does not hold is
// 400 at once, not a wait, while one another instance has just written is
// waited for; and a bad credential is refused before any waiting.
func TestAttackMinSeqBeyondTheStream(t *testing.T) {
	lg := startLagging(t, func(s *khttp.Server) { s.WaitTimeout = time.Minute })
	c := patient("")

	t.Run("BeyondTheStreamIs400AtOnce", func(t *testing.T) {
		last := lg.env.LastSeq(t)
		for _, ahead := range []uint64{last + 1, last + 1_000_000, 1 << 63} {
			for _, r := range []struct{ method, path, token string }{
				{"GET", "/v1/whoami", lg.admin},
				{"POST", "/v1/verify", ""},
				{"GET", "/v1/orgs/acme/keys", lg.admin},
				{"GET", "/v1/orgs/acme/events", lg.admin},
			} {
				var body any
				if r.method == "POST" {
					body = map[string]string{"key": lg.admin}
				}
				res := lg.send(c, r.method, fmt.Sprintf("%s?min_seq=%d", r.path, ahead), r.token, body)
				if res.StatusCode != http.StatusBadRequest || res.errorCode() != "invalid" {
					t.Errorf("%s %s?min_seq=%d with the stream at %d: %d %s, want 400 invalid", r.method, r.path, ahead, last, res.StatusCode, res.body)
				}
			}
		}
	})

	t.Run("BadCredentialIsRefusedBeforeWaiting", func(t *testing.T) {
		seq := lg.fallBehind(t)
		defer lg.lag.release()
		for _, cred := range []string{"", "nonsense", mustSecret(t)} {
			for _, ahead := range []uint64{seq, seq + 1000} {
				res := lg.send(c, "GET", fmt.Sprintf("/v1/whoami?min_seq=%d", ahead), cred, nil)
				if res.StatusCode != http.StatusUnauthorized {
					t.Errorf("whoami?min_seq=%d with credential %q: %d %s, want 401 at once", ahead, cred, res.StatusCode, res.body)
				}
			}
		}
	})

	t.Run("ASequenceJustWrittenElsewhereIsWaitedFor", func(t *testing.T) {
		seq := lg.fallBehind(t)
		done := make(chan response, 1)
		go func() { done <- lg.send(c, "GET", fmt.Sprintf("/v1/whoami?min_seq=%d", seq), lg.admin, nil) }()
		select {
		case res := <-done:
			t.Fatalf("min_seq=%d, in the stream but not applied here: answered %d %s before this instance applied it", seq, res.StatusCode, res.body)
		case <-time.After(300 * time.Millisecond):
		}
		lg.lag.release()
		if res := <-done; res.StatusCode != http.StatusOK {
			t.Errorf("min_seq=%d once applied: %d %s, want 200", seq, res.StatusCode, res.body)
		}
	})
}

// TestAttackSlowBodies: clients that send their headers and then their
// bodies a byte at a time, or never, hold no request slot, and are cut off
// once the body has taken longer than the body timeout.
func TestAttackSlowBodies(t *testing.T) {
	lg := startLagging(t, func(s *khttp.Server) {
		s.MaxInFlight, s.MaxInFlightPerClient, s.ReadBodyTimeout, s.WaitTimeout = 4, -1, 500*time.Millisecond, 10*time.Second
	})
	addr := strings.TrimPrefix(lg.srv.URL, "http://")
	body := `{"key": "` + strings.Repeat("x", 140) + `"}`
	slow := func(trickle bool) net.Conn {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		fmt.Fprintf(conn, "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:3])
		if trickle {
			go func() {
				for i := 3; i < len(body); i++ {
					time.Sleep(100 * time.Millisecond)
					if _, err := conn.Write([]byte{body[i]}); err != nil {
						return
					}
				}
			}()
		}
		return conn
	}
	var conns []net.Conn
	for i := range 12 {
		conns = append(conns, slow(i%2 == 0))
	}
	time.Sleep(100 * time.Millisecond) // their headers read
	lg.othersAnswer(t, patient(""), 10)
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		status, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 400 ") {
			t.Errorf("slow body %d (trickling: %v): %q %v, want 400 once the body timeout passed", i, i%2 == 0, status, err)
		}
	}

	t.Run("TheBodyTimeoutEndsWithTheBody", func(t *testing.T) {
		// A request whose body came in time, and that then waits past the
		// body timeout, is not cut: the deadline was for the body only.
		seq := lg.fallBehind(t)
		done := make(chan response, 1)
		go func() {
			done <- lg.send(patient(""), "POST", fmt.Sprintf("/v1/verify?min_seq=%d", seq), "", map[string]string{"key": lg.admin})
		}()
		time.Sleep(1500 * time.Millisecond) // three body timeouts
		lg.lag.release()
		if res := <-done; res.StatusCode != http.StatusOK {
			t.Errorf("a verification that waited past the body timeout: %d %s, want 200", res.StatusCode, res.body)
		}
	})
}
