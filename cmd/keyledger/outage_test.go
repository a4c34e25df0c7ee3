package main

import (
	"bytes"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// natsOn starts a JetStream nats-server on 127.0.0.1:port with its store in
// dir; restarting it on the same port and dir is how a test ends an outage.
func natsOn(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

// TestOutageAnswers503AndRecoversWithoutARestart stops NATS under a running
// keyledger: writes answer 503 within the command timeout, verify keeps
// answering from memory, /readyz says not ready; NATS comes back and writes
// succeed again with no restart of keyledger.
func TestOutageAnswers503AndRecoversWithoutARestart(t *testing.T) {
	dir := t.TempDir()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	port, _ := strconv.Atoi(p)
	ns := natsOn(t, port, dir+"/nats")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	addr := freeAddr(t)
	// One key makes a load of creates through the outage: the outage is
	// tested, not the write limit.
	env := []string{"KEYLEDGER_NATS_URL=" + ns.ClientURL(), "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_COMMAND_TIMEOUT=1s",
		"KEYLEDGER_SIGNING_KEY=" + dir + "/signing.pem", "KEYLEDGER_WRITE_RATE_LIMIT=0"}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	k := serveProcess(t, dir, addr, env)
	create := func() (int, time.Duration) {
		start := time.Now()
		req, _ := http.NewRequest("POST", k.url+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"outage"}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			return 0, time.Since(start) // no answer at all: counted as bad below
		}
		res.Body.Close()
		if res.StatusCode == http.StatusServiceUnavailable && res.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		return res.StatusCode, time.Since(start)
	}
	get := func(path string, body string) int {
		var res *http.Response
		var err error
		if body == "" {
			res, err = http.Get(k.url + path)
		} else {
			res, err = http.Post(k.url+path, "application/json", bytes.NewReader([]byte(body)))
		}
		if err != nil {
			return 0 // no answer at all
		}
		res.Body.Close()
		return res.StatusCode
	}
	if code, _ := create(); code != http.StatusCreated {
		t.Fatalf("create before the outage: %d", code)
	}

	// Load through the outage: verifications must keep answering 200 and
	// nothing may answer 500.
	stopLoad := make(chan struct{})
	loadDone := make(chan []int)
	go func() {
		var bad []int
		for {
			select {
			case <-stopLoad:
				loadDone <- bad
				return
			default:
			}
			if code := get("/v1/verify", `{"key":"`+admin+`"}`); code != http.StatusOK {
				bad = append(bad, code)
			}
			if code, _ := create(); code == 0 || code >= 500 && code != http.StatusServiceUnavailable {
				bad = append(bad, code)
			}
		}
	}()
	ns.Shutdown()
	ns.WaitForShutdown()
	stoppedAt := time.Now()
	for range 3 {
		code, took := create()
		if code != http.StatusServiceUnavailable || took > 4*time.Second {
			t.Errorf("create during the outage: %d after %s, want 503 within the 1 s command timeout", code, took)
		}
	}
	if code := get("/v1/verify", `{"key":"`+admin+`"}`); code != http.StatusOK {
		t.Errorf("verify during the outage: %d", code)
	}
	res, err := http.Post(k.url+"/v1/verify", "application/json", bytes.NewReader([]byte(`{"key":"`+admin+`"}`)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("X-Keyledger-Stale-Seconds") == "" || res.Header.Get("X-Keyledger-Applied-Seq") == "" {
		t.Errorf("an answer from memory during the outage does not say how stale it may be: %v", res.Header)
	}
	if code := get("/readyz", ""); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage: %d, want 503", code)
	}

	down := time.Since(stoppedAt)
	ns = natsOn(t, port, dir+"/nats")
	backAt := time.Now()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _ := create()
		if code == http.StatusCreated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes did not recover within 30 s of NATS coming back: %d", code)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("NATS down %s; writes answered 503 throughout; the first write succeeded %s after NATS was back",
		down.Round(time.Millisecond), time.Since(backAt).Round(time.Millisecond))
	close(stopLoad)
	if bad := <-loadDone; len(bad) > 0 {
		t.Errorf("under load through the outage, %d answers were neither 200 nor 503: %v", len(bad), bad[:min(len(bad), 10)])
	}
	if code := get("/readyz", ""); code != http.StatusOK {
		t.Errorf("/readyz after the outage: %d", code)
	}
	if res, err := http.Get(k.url + "/healthz"); err == nil {
		res.Body.Close()
		if res.Header.Get("X-Keyledger-Stale-Seconds") != "" {
			t.Error("answers still say stale after NATS came back")
		}
	}
}
