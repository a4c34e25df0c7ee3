package main

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAttackStaleInstanceFailsClosed cuts NATS from under `serve
// --max-staleness 1s`: verifications keep answering from memory for that
// long, then answer 503 with Retry-After (a revocation made meanwhile
// elsewhere would not be seen), and vouch again once NATS is back.
func TestAttackStaleInstanceFailsClosed(t *testing.T) {
	dir := t.TempDir()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	port, _ := strconv.Atoi(p)
	ns := natsOn(t, port, dir+"/nats")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_NATS_URL=" + ns.ClientURL(), "KEYLEDGER_HTTP_ADDR=" + addr}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	k := serveProcess(t, dir, addr, env, "--max-staleness", "1s")
	verify := func() (int, string) {
		res, err := http.Post(k.url+"/v1/verify", "application/json", bytes.NewReader([]byte(`{"key":"`+admin+`"}`)))
		if err != nil {
			return 0, ""
		}
		res.Body.Close()
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	if code, _ := verify(); code != http.StatusOK {
		t.Fatalf("verify before the outage: %d", code)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, retry := verify()
		if code == http.StatusServiceUnavailable && retry != "" {
			break
		}
		if code != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("verify while NATS is down: %d (Retry-After %q); want 200 from memory, then 503 past --max-staleness", code, retry)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ns = natsOn(t, port, dir+"/nats")
	deadline = time.Now().Add(30 * time.Second)
	for {
		if code, _ := verify(); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("verify did not vouch again within 30 s of NATS coming back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
