package http_test

import (
	"encoding/json"
	"strings"
	"testing"

	khttp "github.com/keyledger/keyledger/http"
)

// logLines returns the JSON log lines naming request id.
func (h *harness) logLines(id string) []map[string]any {
	h.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(h.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			h.t.Fatalf("log line is not JSON: %s", line)
		}
		if rec["request_id"] == id {
			out = append(out, rec)
		}
	}
	return out
}

func TestRequestIDs(t *testing.T) {
	var st stalledCreates
	h := startWith(t, t.TempDir(), func(s *khttp.Server) { s.MaxInFlight = 1; st.stall(s) })
	admin := h.bootstrap("acme")

	t.Run("TheCallersIdNamesEveryLineOfTheRequest", func(t *testing.T) {
		// A read refused while the one request slot is held logs a
		// warning, then its access line.
		release := holdRequestSlot(t, h, &st, admin)
		res := h.must(503, "GET", "/v1/orgs/acme/keys", admin, nil, khttp.RequestIDHeader, "trace-0042")
		release()
		if got := res.Header.Get(khttp.RequestIDHeader); got != "trace-0042" {
			t.Errorf("answer's %s = %q, want the caller's", khttp.RequestIDHeader, got)
		}
		var msgs []string
		for _, rec := range h.logLines("trace-0042") {
			msgs = append(msgs, rec["msg"].(string))
		}
		if strings.Join(msgs, ",") != "unavailable,request" {
			t.Errorf("lines of the request: %q, want the warning and the access line", msgs)
		}
	})

	t.Run("NewIdsAreUnique", func(t *testing.T) {
		a := h.must(200, "GET", "/healthz", "", nil).Header.Get(khttp.RequestIDHeader)
		b := h.must(200, "GET", "/healthz", "", nil).Header.Get(khttp.RequestIDHeader)
		if a == "" || a == b {
			t.Errorf("two requests got ids %q and %q", a, b)
		}
	})

	t.Run("AMissingOrUnfitIdIsReplaced", func(t *testing.T) {
		for _, sent := range []string{"", "has space", strings.Repeat("x", 129), "semi;colon", admin, "trace-" + admin, "x_" + strings.Repeat("A", 49)} {
			res := h.must(200, "GET", "/healthz", "", nil, khttp.RequestIDHeader, sent)
			got := res.Header.Get(khttp.RequestIDHeader)
			if got == "" || got == sent {
				t.Errorf("sent %q: request id %q, want a new one", sent, got)
			}
			if len(h.logLines(got)) != 1 {
				t.Errorf("sent %q: the access line does not name %q", sent, got)
			}
		}
		if strings.Contains(h.logs.String(), admin) {
			t.Error("a key sent as a request id reached the log")
		}
	})
}
