package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCrashLosesNoAcknowledgedCreate kills -9 an embedded-mode keyledger
// while 2,000 creates run on 16 connections, restarts it on the same data
// directory, and checks that every create answered 201 verifies VALID and
// that no event was stored twice. Every write is synced to disk before it
// is acknowledged (--fsync, the default).
func TestCrashLosesNoAcknowledgedCreate(t *testing.T) {
	if testing.Short() {
		t.Skip("a crash test: not in -short")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	// One key creates all 2,000: the load, not the write limit, is tested.
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_WRITE_RATE_LIMIT=0"}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env)

	const total, clients = 2000, 16
	var mu sync.Mutex
	var acked []string // secrets of creates answered 201
	var next int
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for range clients {
		wg.Go(func() {
			for {
				mu.Lock()
				if next == total {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				req, _ := http.NewRequest("POST", p.url+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"crash"}`))
				req.Header.Set("Authorization", "Bearer "+admin)
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					continue // the server is gone: this create was never answered
				}
				var out struct{ Secret string }
				if res.StatusCode == http.StatusCreated && json.NewDecoder(res.Body).Decode(&out) == nil {
					mu.Lock()
					acked = append(acked, out.Secret)
					mu.Unlock()
				}
				res.Body.Close()
			}
		})
	}
	// Kill it mid-way, without a chance to flush or say goodbye.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	wg.Wait()
	mu.Lock()
	secrets := append([]string(nil), acked...)
	mu.Unlock()
	if len(secrets) >= total {
		t.Fatalf("all %d creates finished before the kill: nothing was tested", total)
	}

	again := serveProcess(t, dir, addr, env)
	for _, s := range secrets {
		res, err := http.Post(again.url+"/v1/verify", "application/json", bytes.NewReader([]byte(`{"key":"`+s+`"}`)))
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Code string }
		_ = json.NewDecoder(res.Body).Decode(&v)
		res.Body.Close()
		if v.Code != "VALID" {
			t.Fatalf("a create answered 201 before the crash verifies %s after it", v.Code)
		}
	}
	again.stop(t)
	out, stderr, err := runBinary(t, dir, env, "audit", "export", "--org", "acme")
	if err != nil {
		t.Fatalf("export: %v %s", err, stderr)
	}
	ids, hashes := map[string]bool{}, map[string]bool{}
	lines := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e struct {
			EventID string `json:"event_id"`
			Data    struct {
				SecretHash string `json:"secret_hash"`
			}
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatal(err)
		}
		if ids[e.EventID] || hashes[e.Data.SecretHash] {
			t.Fatalf("event %s is stored twice", e.EventID)
		}
		ids[e.EventID], hashes[e.Data.SecretHash] = true, true
		lines++
	}
	if lines < len(secrets)+1 {
		t.Errorf("%d events stored, fewer than the %d acknowledged creates and the bootstrap", lines, len(secrets))
	}
	t.Logf("%d creates acknowledged before kill -9, all VALID after restart; %d events stored, none twice", len(secrets), lines)
}
