package http_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
)

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b), res.Header
}

func TestStarting(t *testing.T) {
	page := &khttp.Starting{Version: "v1.2.3"}
	srv := httptest.NewServer(page)
	defer srv.Close()
	page.Waiting("stream KEYLEDGER", 0, "")
	t.Run("ReadyzSaysTheStepBeforeItFails", func(t *testing.T) {
		code, body, _ := get(t, srv.URL+"/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"waiting_for":"stream KEYLEDGER"`) || strings.Contains(body, "attempt") {
			t.Errorf("/readyz = %d %s", code, body)
		}
	})
	page.Waiting("stream KEYLEDGER", 3, events.WaitLeader)
	t.Run("ReadyzSaysWhatItWaitsFor", func(t *testing.T) {
		code, body, _ := get(t, srv.URL+"/readyz")
		var r struct {
			Status, Reason string
			WaitingFor     string `json:"waiting_for"`
			Attempt        int
		}
		_ = json.Unmarshal([]byte(body), &r)
		if code != http.StatusServiceUnavailable || r.Status != "starting" || r.WaitingFor != "stream KEYLEDGER" || r.Attempt != 3 || r.Reason != events.WaitLeader {
			t.Errorf("/readyz = %d %s", code, body)
		}
	})
	t.Run("HealthzIsAlive", func(t *testing.T) {
		if code, body, _ := get(t, srv.URL+"/healthz"); code != http.StatusOK || !strings.Contains(body, "v1.2.3") {
			t.Errorf("/healthz = %d %s", code, body)
		}
	})
	t.Run("TheAPIIsUnavailable", func(t *testing.T) {
		code, body, h := get(t, srv.URL+"/v1/orgs/acme/keys")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"unavailable"`) || h.Get("Retry-After") == "" {
			t.Errorf("GET /v1/orgs/acme/keys while starting = %d %s (Retry-After %q)", code, body, h.Get("Retry-After"))
		}
	})
	t.Run("MetricsSayStarting", func(t *testing.T) {
		if code, body, _ := get(t, srv.URL+"/metrics"); code != http.StatusOK || !strings.Contains(body, "\nkeyledger_starting 1\n") || !strings.Contains(body, "\nkeyledger_start_attempts 3\n") {
			t.Errorf("/metrics = %d %s", code, body)
		}
	})
	page.Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	t.Run("OnceServingEverythingGoesToTheAPI", func(t *testing.T) {
		for _, path := range []string{"/readyz", "/healthz", "/metrics", "/v1/verify"} {
			if code, _, _ := get(t, srv.URL+path); code != http.StatusTeapot {
				t.Errorf("%s once serving = %d, want the API's", path, code)
			}
		}
	})
}

// TestReadyzFailsOnceTheStreamIsDeleted: the harness's own instance, its
// stream deleted under it.
func TestReadyzFailsOnceTheStreamIsDeleted(t *testing.T) {
	h := start(t)
	h.must(http.StatusOK, "GET", "/readyz", "", nil)
	if err := h.env.JS.DeleteStream(t.Context(), events.StreamName); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		res := h.request("GET", "/readyz", "", nil)
		if res.StatusCode == http.StatusServiceUnavailable {
			if !strings.Contains(string(res.body), events.StreamDeleted) {
				t.Errorf("/readyz = %s, want it to say %q", res.body, events.StreamDeleted)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d 15 s after the stream was deleted", res.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if res := h.request("GET", "/metrics", "", nil); !strings.Contains(string(res.body), "\nkeyledger_stream_ok 0\n") {
		t.Error("/metrics has no keyledger_stream_ok 0 after the delete")
	}
}
