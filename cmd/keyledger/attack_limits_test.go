package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAttackWriteFloodFromOneCredential: one management key sends a
// hundred creates at once to `keyledger serve` as it runs with no limit
// flag. The documented default lets 60 a minute through; the others get
// 429 with Retry-After and append nothing. Rotations share the budget,
// revocations do not, and another credential has its own.
func TestAttackWriteFloodFromOneCredential(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "flooder")
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	other, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "bystander")
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, stderr)
	}
	other = strings.TrimSpace(other)
	p := serveProcess(t, dir, addr, env)

	call := func(method, path, token, body string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var raw json.RawMessage
		_ = json.NewDecoder(res.Body).Decode(&raw)
		return res, raw
	}

	const flood, limit = 100, 60
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	statuses := map[int]int{}
	var created []string
	for i := range flood {
		wg.Go(func() {
			res, body := call("POST", "/v1/orgs/acme/keys", admin, fmt.Sprintf(`{"name": "flood %d"}`, i))
			mu.Lock()
			defer mu.Unlock()
			statuses[res.StatusCode]++
			switch res.StatusCode {
			case http.StatusCreated:
				var out struct{ Key struct{ ID string } }
				_ = json.Unmarshal(body, &out)
				created = append(created, out.Key.ID)
			case http.StatusTooManyRequests:
				if res.Header.Get("Retry-After") == "" || !strings.Contains(string(body), "rate_limited") {
					t.Errorf("429 without Retry-After or code: %s", body)
				}
			}
		})
	}
	wg.Wait()
	// The budget refills at one a second: allow what the flood's own
	// duration let through.
	allowed := limit + int(math.Ceil(time.Since(start).Seconds()))
	if statuses[http.StatusCreated] < limit || statuses[http.StatusCreated] > allowed || statuses[http.StatusCreated]+statuses[http.StatusTooManyRequests] != flood {
		t.Fatalf("a flood of %d creates: %v; want %d to %d created, the rest 429", flood, statuses, limit, allowed)
	}

	// The stream holds the bootstraps and the creates that were answered 201, no more.
	var page struct {
		Events []struct{ Type string }
		More   bool
	}
	res, body := call("GET", "/v1/orgs/acme/events?type=KeyCreated&limit=1000", other, "")
	if err := json.Unmarshal(body, &page); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("events: %d %s", res.StatusCode, body)
	}
	if got, want := len(page.Events), 2+len(created); got != want {
		t.Errorf("the stream holds %d KeyCreated, want %d (2 bootstraps, %d creates answered 201)", got, want, len(created))
	}

	// The budget holds rotations too; a revocation is never refused for it.
	if res, _ := call("POST", "/v1/orgs/acme/keys/"+created[0]+"/rotate", admin, ""); res.StatusCode != http.StatusTooManyRequests {
		t.Errorf("a rotation by the flooder: %d, want 429", res.StatusCode)
	}
	for _, id := range created[:10] {
		if res, body := call("DELETE", "/v1/orgs/acme/keys/"+id, admin, ""); res.StatusCode != http.StatusNoContent {
			t.Errorf("a revocation by the flooder: %d %s, want 204", res.StatusCode, body)
		}
	}
	// Another credential has a budget of its own.
	if res, body := call("POST", "/v1/orgs/acme/keys", other, `{"name": "unaffected"}`); res.StatusCode != http.StatusCreated {
		t.Errorf("a create by another credential: %d %s, want 201", res.StatusCode, body)
	}
}

// TestAttackCreatePastTheOrgCap: with --max-keys-per-org 3 (through its
// environment variable), an org holding three keys not revoked gets 409
// conflict naming the limit for a fourth, and the stream does not move;
// revoking one makes room; another org is not held back.
func TestAttackCreatePastTheOrgCap(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_MAX_KEYS_PER_ORG=3"}
	boot := func(org string) string {
		t.Helper()
		key, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", org, "--name", "admin")
		if err != nil {
			t.Fatalf("bootstrap %s: %v\n%s", org, err, stderr)
		}
		return strings.TrimSpace(key)
	}
	admin, globex := boot("acme"), boot("globex")
	p := serveProcess(t, dir, addr, env)
	call := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var raw json.RawMessage
		_ = json.NewDecoder(res.Body).Decode(&raw)
		return res.StatusCode, string(raw)
	}
	// The org's events, read from the stream.
	events := func() int {
		t.Helper()
		status, body := call("GET", "/v1/orgs/acme/events?limit=1000", admin, "")
		var page struct {
			Events []json.RawMessage
			More   bool
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil || status != http.StatusOK || page.More {
			t.Fatalf("events: %d %s", status, body)
		}
		return len(page.Events)
	}

	var second struct{ Key struct{ ID string } }
	for i := range 2 {
		status, body := call("POST", "/v1/orgs/acme/keys", admin, fmt.Sprintf(`{"name": "key %d"}`, i))
		if status != http.StatusCreated {
			t.Fatalf("create %d of 3: %d %s", i+2, status, body)
		}
		_ = json.Unmarshal([]byte(body), &second)
	}
	before := events()
	status, body := call("POST", "/v1/orgs/acme/keys", admin, `{"name": "one too many"}`)
	if status != http.StatusConflict || !strings.Contains(body, `"conflict"`) || !strings.Contains(body, "3") {
		t.Errorf("a fourth key: %d %s; want 409 conflict naming the limit of 3", status, body)
	}
	if after := events(); after != before {
		t.Errorf("the refused create appended: %d events of acme, then %d", before, after)
	}
	if status, body := call("DELETE", "/v1/orgs/acme/keys/"+second.Key.ID, admin, ""); status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if status, body := call("POST", "/v1/orgs/acme/keys", admin, `{"name": "in the room a revocation made"}`); status != http.StatusCreated {
		t.Errorf("a fourth key, one of the three revoked: %d %s; want 201", status, body)
	}
	if status, body := call("POST", "/v1/orgs/globex/keys", globex, `{"name": "elsewhere"}`); status != http.StatusCreated {
		t.Errorf("a create in another org: %d %s", status, body)
	}
}
