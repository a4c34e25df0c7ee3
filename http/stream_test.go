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
)

type sseEvent struct{ id, event, data string }

// sseStream is an open event stream whose events arrive on a channel.
type sseStream struct {
	events   chan sseEvent
	comments chan string
	ended    chan struct{} // closed when the server ends the stream
	cancel   context.CancelFunc
}

func (h *harness) openStream(path, token string, headers ...string) *sseStream {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := h.srv.Client().Do(req)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(res.Body)
		cancel()
		h.t.Fatalf("GET %s: %d %s", path, res.StatusCode, body)
	}
	s := &sseStream{events: make(chan sseEvent, 1000), comments: make(chan string, 100), ended: make(chan struct{}), cancel: cancel}
	h.t.Cleanup(cancel)
	go func() {
		defer close(s.ended)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var e sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if e.id != "" {
					s.events <- e
				}
				e = sseEvent{}
			case strings.HasPrefix(line, ":"):
				select {
				case s.comments <- line:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				e.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				e.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				e.data = line[6:]
			}
		}
	}()
	return s
}

// next returns the next n events, failing after 10s.
func (s *sseStream) next(t *testing.T, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case e := <-s.events:
			out = append(out, e)
		case <-timeout:
			t.Fatalf("got %d events of %d within 10s: %v", len(out), n, out)
		}
	}
	return out
}

// quiet asserts that no further event arrives for a moment.
func (s *sseStream) quiet(t *testing.T) {
	t.Helper()
	select {
	case e := <-s.events:
		t.Errorf("unexpected event %+v", e)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestEventStream(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.Heartbeat = 100 * time.Millisecond })
	admin := h.bootstrap("acme")
	other := h.bootstrap("globex")

	t.Run("EventsArriveInOrder", func(t *testing.T) {
		s := h.openStream("/v1/orgs/acme/events/stream?after_seq=0", admin)
		k := h.create("acme", admin, map[string]any{"name": "a"})
		h.rotate("acme", k.Key.ID, admin, nil)
		h.create("globex", other, map[string]any{"name": "not acme's"})
		h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+k.Key.ID, admin, nil)
		got := s.next(t, 4)
		var types []string
		for i, e := range got {
			types = append(types, e.event)
			if !strings.Contains(e.data, `"org_id":"acme"`) || !strings.Contains(e.data, `"seq":`+e.id) {
				t.Errorf("event %d: id %s data %s", i, e.id, e.data)
			}
			if i > 0 && e.id <= got[i-1].id && len(e.id) == len(got[i-1].id) {
				t.Errorf("event %d out of order: %s after %s", i, e.id, got[i-1].id)
			}
		}
		if fmt.Sprint(types) != "[KeyCreated KeyCreated KeyRotated KeyRevoked]" {
			t.Errorf("types = %v, want the bootstrap, then created, rotated, revoked", types)
		}
		s.quiet(t)
		select {
		case <-s.comments:
		case <-time.After(2 * time.Second):
			t.Error("no heartbeat on an idle stream")
		}
	})

	t.Run("ReconnectWithLastEventIDGetsExactlyTheMissedOnes", func(t *testing.T) {
		s := h.openStream("/v1/orgs/acme/events/stream", admin) // from now on
		first := h.create("acme", admin, map[string]any{"name": "before the cut"})
		seen := s.next(t, 1)
		s.cancel()
		var missed []string
		for i := range 3 {
			missed = append(missed, h.create("acme", admin, map[string]any{"name": fmt.Sprint("missed ", i)}).Key.ID)
		}
		again := h.openStream("/v1/orgs/acme/events/stream", admin, "Last-Event-ID", seen[0].id)
		got := again.next(t, 3)
		for i, e := range got {
			if !strings.Contains(e.data, missed[i]) {
				t.Errorf("resumed event %d = %s, want the creation of %s", i, e.data, missed[i])
			}
		}
		again.quiet(t)
		if !strings.Contains(seen[0].data, first.Key.ID) {
			t.Errorf("first event = %s", seen[0].data)
		}
	})

	t.Run("KeyWithEventsReadFollowsItsOwnOrgFiltered", func(t *testing.T) {
		reader := h.create("acme", admin, map[string]any{"name": "listener", "scopes": []string{"read"}}).Secret
		h.must(http.StatusForbidden, "GET", "/v1/events/stream", reader, nil)
		h.must(http.StatusUnauthorized, "GET", "/v1/events/stream", "", nil)
		h.must(http.StatusBadRequest, "GET", "/v1/orgs/acme/events/stream?types=KeyDeleted", admin, nil)

		key := h.create("globex", other, map[string]any{"name": "events", "scopes": []string{khttp.ScopeEventsRead}}).Secret
		s := h.openStream("/v1/events/stream?types=KeyRevoked,KeyRotated", key)
		k := h.create("globex", other, map[string]any{"name": "watched"})
		h.rotate("globex", k.Key.ID, other, nil)
		a := h.create("acme", admin, map[string]any{"name": "elsewhere"})
		h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+a.Key.ID, admin, nil)
		h.must(http.StatusNoContent, "DELETE", "/v1/orgs/globex/keys/"+k.Key.ID, other, nil)
		got := s.next(t, 2)
		if got[0].event != "KeyRotated" || got[1].event != "KeyRevoked" || !strings.Contains(got[1].data, k.Key.ID) {
			t.Errorf("filtered stream = %+v", got)
		}
		s.quiet(t)
	})
}

// TestSlowStreamClientIsCutOff never reads its stream: the server must not
// buffer for it without bound, but end the stream once a write stalls.
func TestSlowStreamClientIsCutOff(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.SlowClientTimeout = 200 * time.Millisecond })
	admin := h.bootstrap("acme")
	conn, err := net.Dial("tcp", strings.TrimPrefix(h.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4096) // a client that takes little, and then nothing
	}
	fmt.Fprintf(conn, "GET /v1/orgs/acme/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", admin)
	// More events than loopback's socket buffers hold (a few MB).
	const n, writers = 16000, 8
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range n / writers {
				if _, err := h.keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: fmt.Sprint("bulk ", w, " ", i), By: domain.SystemPrincipal("", "")}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// The handler returns — its access line is written — once a write to
	// the stalled client has waited past SlowClientTimeout.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(h.logs.String(), `"path":"/v1/orgs/acme/events/stream","route":"/v1/orgs/{org}/events/stream","status":200`) {
		if time.Now().After(deadline) {
			t.Fatal("the server still serves a client that stopped reading")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	body, _ := io.ReadAll(conn)
	if got := strings.Count(string(body), "\nevent: "); got >= n {
		t.Errorf("the stalled client got all %d events: the server buffered for it", got)
	} else {
		t.Logf("the stalled client got %d of %d events before it was cut off", got, n)
	}
}
