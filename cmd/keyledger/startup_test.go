package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// readyz is one answer of /readyz.
type readyz struct {
	code int
	body struct {
		Status     string `json:"status"`
		WaitingFor string `json:"waiting_for"`
		Attempt    int    `json:"attempt"`
		Reason     string `json:"reason"`
	}
}

func getReadyz(url string) (readyz, error) {
	var r readyz
	res, err := http.Get(url + "/readyz")
	if err != nil {
		return r, err
	}
	defer res.Body.Close()
	r.code = res.StatusCode
	return r, json.NewDecoder(res.Body).Decode(&r.body)
}

// until polls get every 50 ms until ok, for at most within, and returns
// the last answer and whether ok was met.
func until[T any](within time.Duration, get func() (T, error), ok func(T) bool) (T, bool) {
	deadline := time.Now().Add(within)
	for {
		v, err := get()
		if err == nil && ok(v) {
			return v, true
		}
		if time.Now().After(deadline) {
			return v, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitingLines counts the log lines of failed start-up tries of step.
func waitingLines(stderr, step string) int {
	n := 0
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, `"msg":"waiting for `+step+`"`) && strings.Contains(line, `"attempt":`) {
			n++
		}
	}
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	port, _ := strconv.Atoi(p)
	return port
}

// TestServeWaitsForNATS starts serve with --nats-url where nothing listens
// yet: it does not exit, /healthz answers 200, /readyz 503 saying it waits
// for NATS, the API 503, and each try is logged; once NATS is there, it
// becomes ready by itself.
func TestServeWaitsForNATS(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_NATS_URL=nats://127.0.0.1:" + strconv.Itoa(port), "KEYLEDGER_HTTP_ADDR=" + addr,
		"KEYLEDGER_SIGNING_KEY=" + dir + "/signing.pem"}
	p := startServe(t, dir, addr, env)

	r, ok := until(30*time.Second, func() (readyz, error) { return getReadyz(p.url) }, func(r readyz) bool { return r.body.Attempt >= 3 })
	if !ok {
		t.Fatalf("/readyz while NATS is not there: %+v\n%s", r, p.stderr)
	}
	if r.code != http.StatusServiceUnavailable || r.body.Status != "starting" || r.body.WaitingFor != "NATS" || r.body.Reason != "NATS unreachable" {
		t.Errorf("/readyz while NATS is not there: %d %+v; want 503 starting, waiting for NATS, NATS unreachable", r.code, r.body)
	}
	if res, err := http.Get(p.url + "/healthz"); err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("/healthz while starting: %v %v; want 200", res, err)
	}
	res, err := http.Post(p.url+"/v1/verify", "application/json", strings.NewReader(`{"key":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"unavailable"`) || res.Header.Get("Retry-After") == "" {
		t.Errorf("a verify while starting: %d %s; want 503 unavailable with Retry-After", res.StatusCode, body)
	}
	res, err = http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "keyledger_starting 1") {
		t.Errorf("/metrics while starting has no keyledger_starting 1:\n%s", body)
	}
	if n := waitingLines(p.stderr.String(), "NATS"); n < 2 {
		t.Errorf("%d log lines of tries to reach NATS, want one per try:\n%s", n, p.stderr)
	}

	ns := natsOn(t, port, dir+"/nats")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	p.waitReady(t, 60*time.Second)
	res, err = http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{"keyledger_starting 0", "keyledger_stream_ok 1"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics once ready has no %q", want)
		}
	}
}

// TestServeStartTimeout: with --start-timeout, a start that cannot reach
// NATS gives up, and says why; SIGTERM while it waits stops it cleanly.
func TestServeStartTimeout(t *testing.T) {
	dir := t.TempDir()
	env := []string{"KEYLEDGER_NATS_URL=nats://127.0.0.1:" + strconv.Itoa(freePort(t)), "KEYLEDGER_HTTP_ADDR=" + freeAddr(t),
		"KEYLEDGER_SIGNING_KEY=" + dir + "/signing.pem"}
	t.Run("GivesUpPastIt", func(t *testing.T) {
		_, stderr, err := runBinary(t, dir, env, "serve", "--start-timeout", "2s")
		if err == nil || !strings.Contains(stderr, "not started within --start-timeout 2s") {
			t.Errorf("serve --start-timeout 2s with no NATS: %v\n%s", err, stderr)
		}
	})
	t.Run("SIGTERMWhileWaitingStopsCleanly", func(t *testing.T) {
		addr := freeAddr(t)
		p := startServe(t, dir, addr, append(env, "KEYLEDGER_HTTP_ADDR="+addr))
		if _, ok := until(30*time.Second, func() (readyz, error) { return getReadyz(p.url) }, func(r readyz) bool { return r.body.Attempt >= 1 }); !ok {
			t.Fatalf("never waiting:\n%s", p.stderr)
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			p.done <- err
			if err != nil || !strings.Contains(p.stderr.String(), "stopped while starting") {
				t.Errorf("SIGTERM while waiting: %v\n%s", err, p.stderr)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve did not stop within 30 s of SIGTERM while waiting\n%s", p.stderr)
		}
	})
}
