package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/apitest"
	"github.com/keyledger/keyledger/internal/natstest"
)

func get(t *testing.T, url, key string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

func TestProtectedServiceFollowsRevocations(t *testing.T) {
	env := natstest.StartListening(t)
	api := apitest.Start(t, env)
	admin := api.Bootstrap(t, "acme", "orders:read")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan string, 1)
	done := make(chan error, 1)
	signers := filepath.Join(t.TempDir(), "keyledger-signers.pem")
	if err := os.WriteFile(signers, env.Signers.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	go func() {
		done <- run(ctx, []string{"--nats-url", env.Embedded.ClientURL(), "--nats-creds", env.Embedded.Credentials.Subscriber,
			"--event-signers", signers, "--addr", "127.0.0.1:0"}, natstest.Quiet(), ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	case <-time.After(10 * time.Second):
		t.Fatal("the service did not start")
	}
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for code, _ := get(t, base+"/healthz", ""); code != 200; code, _ = get(t, base+"/healthz", "") {
		if time.Now().After(deadline) {
			t.Fatal("never ready")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if code, body := get(t, base+"/orders", admin); code != 200 || !strings.Contains(body, `"org":"acme"`) {
		t.Fatalf("with a valid key: %d %s", code, body)
	}
	if code, _ := get(t, base+"/orders", ""); code != 401 {
		t.Errorf("without a key: %d", code)
	}
	// The admin key revokes itself; the service refuses it once the stream has it.
	req, _ := http.NewRequest("GET", api.URL+"/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var who struct{ ID string }
	_ = json.NewDecoder(res.Body).Decode(&who)
	res.Body.Close()
	del, _ := http.NewRequest("DELETE", api.URL+"/v1/orgs/acme/keys/"+who.ID, nil)
	del.Header.Set("Authorization", "Bearer "+admin)
	if res, err := http.DefaultClient.Do(del); err != nil || res.StatusCode != 204 {
		t.Fatalf("revoke: %v %v", res, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, base+"/orders", admin)
		if code == 401 && strings.Contains(body, "REVOKED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked key is still accepted: %d %s", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}
