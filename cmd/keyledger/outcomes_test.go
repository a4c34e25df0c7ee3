package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOutcomesSurviveARestartAndLoseAtMostTheLastFlushOnSIGKILL runs the
// binary with outcomes flushed every second: a clean stop keeps every count
// (the final flush and the rollup), and an instance killed with SIGKILL
// loses at most what it counted since its last flush; a start rebuilds
// from the rollup and the batches after it.
func TestOutcomesSurviveARestartAndLoseAtMostTheLastFlushOnSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the binary three times: not in -short")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr}
	args := []string{"--usage-outcomes-flush-interval", "1s"}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env, args...)
	var created struct {
		Key    struct{ ID string }
		Secret string
	}
	callJSON(t, p.url, "POST", "/v1/orgs/acme/keys", admin, `{"name":"counted"}`, http.StatusCreated, &created)
	verifyN := func(n int) {
		for range n {
			var v struct{ Code string }
			callJSON(t, p.url, "POST", "/v1/verify", "", `{"key":"`+created.Secret+`"}`, http.StatusOK, &v)
			if v.Code != "VALID" {
				t.Fatalf("verify: %s", v.Code)
			}
		}
	}
	verifyN(5)
	p.stop(t) // a clean stop: flushes, and writes the rollup
	first := p.stderr.String()

	p = serveProcess(t, dir, addr, env, args...)
	// A start merges the rollup and the stream beside serving: wait for it.
	if got := waitValid(t, p.url, admin, created.Key.ID, 5); got != 5 {
		t.Fatalf("after a clean restart: %d valid, want 5\n%s\n%s", got, first, p.stderr)
	}
	verifyN(4)
	time.Sleep(2500 * time.Millisecond) // flushed
	verifyN(3)                          // perhaps not
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done

	p = serveProcess(t, dir, addr, env, args...)
	got := waitValid(t, p.url, admin, created.Key.ID, 9)
	time.Sleep(500 * time.Millisecond) // and anything more the stream holds
	got = validCount(t, p.url, admin, created.Key.ID)
	if got < 9 || got > 12 {
		t.Errorf("after SIGKILL: %d valid, want 9 (all but the last second) to 12", got)
	}
	t.Logf("after SIGKILL %d of 12 verifications counted", got)
}

// waitValid waits up to 10s until the key counts at least want valid
// verifications, and returns the count.
func waitValid(t *testing.T, base, admin, id string, want uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	got := validCount(t, base, admin, id)
	for got < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		got = validCount(t, base, admin, id)
	}
	return got
}

func validCount(t *testing.T, base, admin, id string) uint64 {
	t.Helper()
	var u struct{ Totals struct{ Valid uint64 } }
	callJSON(t, base, "GET", "/v1/orgs/acme/keys/"+id+"/usage?window=24h&step=1m", admin, "", http.StatusOK, &u)
	return u.Totals.Valid
}

func callJSON(t *testing.T, base, method, path, token, body string, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	if res.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d", method, path, res.StatusCode, want)
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}
