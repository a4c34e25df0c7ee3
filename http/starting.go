package http

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/keyledger/keyledger/domain"
)

// Starting answers while the service starts, before the API exists:
// /healthz 200 (the process is alive), /readyz 503 saying what the
// start-up waits for, /metrics keyledger_ready 0, and every other route
// 503 unavailable. Once Serve is called it hands every request to the API.
type Starting struct {
	Version string

	api atomic.Pointer[http.Handler]

	mu      sync.Mutex
	waiting string // the step under way: "NATS", "stream KEYLEDGER", "key-value bucket …"
	attempt int
	reason  string // events.WaitReason of its last failure
}

// Waiting records the step the start-up is on, how many times it was
// tried, and why its last try failed ("" before the first failure).
func (s *Starting) Waiting(step string, attempt int, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waiting, s.attempt, s.reason = step, attempt, reason
}

// Serve hands every request to api from now on.
func (s *Starting) Serve(api http.Handler) { s.api.Store(&api) }

func (s *Starting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if api := s.api.Load(); api != nil {
		(*api).ServeHTTP(w, r)
		return
	}
	s.mu.Lock()
	waiting, attempt, reason := s.waiting, s.attempt, s.reason
	s.mu.Unlock()
	switch r.URL.Path {
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "starting", "version": s.Version})
	case "/readyz":
		body := map[string]any{"status": "starting", "waiting_for": waiting}
		if attempt > 0 {
			body["attempt"], body["reason"] = attempt, reason
		}
		writeJSON(w, http.StatusServiceUnavailable, body)
	case "/metrics":
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprintf(w, "# HELP keyledger_starting 1 while the instance is starting (waiting for NATS, the JetStream leader, the stream or a bucket: /readyz says which); 0 once it serves.\n# TYPE keyledger_starting gauge\nkeyledger_starting 1\n")
		fmt.Fprintf(w, "# HELP keyledger_start_attempts How many times the start-up step under way was tried.\n# TYPE keyledger_start_attempts gauge\nkeyledger_start_attempts %d\n", attempt)
	default:
		w.Header()["Retry-After"] = retryAfter1s
		writeJSON(w, http.StatusServiceUnavailable, errorBody{errorDetail{Code: domain.EUNAVAILABLE,
			Message: "keyledger is starting (waiting for " + waiting + "); retry shortly"}})
	}
}
