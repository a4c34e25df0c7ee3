package http_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// workload creates, rotates (with and without grace) and revokes keys in
// two orgs, and returns every secret it was ever shown.
func workload(h *harness) (secrets []string) {
	h.t.Helper()
	for _, org := range []string{"acme", "globex"} {
		admin := h.bootstrap(org)
		secrets = append(secrets, admin)
		for i := range 4 {
			k := h.create(org, admin, map[string]any{"name": fmt.Sprintf("%s key %d", org, i), "scopes": []string{"read", "write"}})
			secrets = append(secrets, k.Secret)
			if i%2 == 0 {
				secrets = append(secrets, h.rotate(org, k.Key.ID, admin, map[string]any{"grace_period_seconds": 60 * i}).Secret)
			}
			if i == 3 {
				h.must(http.StatusNoContent, "DELETE", "/v1/orgs/"+org+"/keys/"+k.Key.ID, admin, nil)
			}
		}
	}
	return secrets
}

// TestSecretsNeverRest searches every file of the store, and the logs, for
// every secret the API ever showed, and for their random parts alone.
func TestSecretsNeverRest(t *testing.T) {
	dir := t.TempDir()
	h := startIn(t, dir)
	secrets := workload(h)
	h.stop() // flush and close the store files
	var files, hashed int
	control := []byte(domain.HashSecret(secrets[0])) // proves the files are searchable as plain bytes
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(raw, control) {
			hashed++
		}
		for _, s := range secrets {
			if _, random, _ := strings.Cut(s, "_"); bytes.Contains(raw, []byte(random[:20])) {
				t.Errorf("%s holds a secret", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 || hashed == 0 {
		t.Fatalf("searched %d files and found a known hash in %d: the search would not see a secret either", files, hashed)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, `"msg":"request"`) {
		t.Fatal("no access log lines were captured: nothing was searched")
	}
	for _, s := range secrets {
		if _, random, _ := strings.Cut(s, "_"); strings.Contains(logs, random[:20]) {
			t.Error("a log line holds a secret")
		}
	}
	t.Logf("searched %d files and %d bytes of logs for %d secrets", files, len(logs), len(secrets))
}

// TestRestartRebuildsIdenticalProjections reads everything, restarts on the
// same data directory and reads it all again.
func TestRestartRebuildsIdenticalProjections(t *testing.T) {
	dir := t.TempDir()
	h := startIn(t, dir)
	secrets := workload(h)
	snapshot := func(h *harness) string {
		var b strings.Builder
		for _, org := range []string{"acme", "globex"} {
			admin := secrets[0]
			if org == "globex" {
				admin = secrets[len(secrets)/2]
			}
			var page struct{ Keys []keyView }
			res := h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/keys?status=all", admin, nil)
			res.json(t, &page)
			b.Write(res.body)
			for _, k := range page.Keys {
				b.Write(h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/keys/"+k.ID, admin, nil).body)
				b.Write(h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/keys/"+k.ID+"/events", admin, nil).body)
			}
			b.Write(h.must(http.StatusOK, "GET", "/v1/orgs/"+org+"/events?limit=1000", admin, nil).body)
		}
		for _, s := range secrets {
			b.Write(h.must(http.StatusOK, "POST", "/v1/verify", "", map[string]string{"key": s}).body)
		}
		return b.String()
	}
	// Last use is not rebuilt from the stream (it lives in memory and the
	// usage bucket), and the requests here use the admin key: leave it out.
	lastUsed := regexp.MustCompile(`"last_used_at":"[^"]*"`)
	before := lastUsed.ReplaceAllString(snapshot(h), "")
	h.stop()

	again := startIn(t, dir)
	if after := lastUsed.ReplaceAllString(snapshot(again), ""); after != before {
		t.Errorf("after a restart the projections differ:\nbefore: %.2000s\nafter:  %.2000s", before, after)
	}
	if !strings.Contains(before, "REVOKED") || !strings.Contains(before, "EXPIRED") || !strings.Contains(before, `"deprecated":true`) {
		t.Errorf("the workload did not reach every state: %s", before)
	}
}

// TestConcurrentRotationsAndRevocations races 50 writers on one key.
func TestConcurrentRotationsAndRevocations(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "contended"}).Key
	path := "/v1/orgs/acme/keys/" + k.ID

	const writers = 50
	statuses := make([]int, writers)
	codes := make([]string, writers)
	secrets := make([]string, writers)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-gate
			var res response
			if i%2 == 0 {
				res = h.request("DELETE", path, admin, nil)
			} else {
				res = h.request("POST", path+"/rotate", admin, nil)
				var out issued
				if res.StatusCode == http.StatusOK {
					res.json(t, &out)
					secrets[i] = out.Secret
				}
			}
			statuses[i], codes[i] = res.StatusCode, res.errorCode()
		})
	}
	close(gate)
	wg.Wait()

	var revoked, rotated int
	for i := range writers {
		switch {
		case i%2 == 0 && statuses[i] == http.StatusNoContent:
			revoked++
		case i%2 == 0 && statuses[i] == http.StatusConflict && (codes[i] == "key_revoked" || codes[i] == "conflict"):
		case i%2 == 1 && statuses[i] == http.StatusOK:
			rotated++
		case i%2 == 1 && statuses[i] == http.StatusConflict:
		default:
			t.Errorf("writer %d: %d %s", i, statuses[i], codes[i])
		}
	}
	if revoked != 1 {
		t.Errorf("%d revocations succeeded, want exactly 1", revoked)
	}

	evs := h.history("acme", k.ID, admin)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got, want := strings.Count(strings.Join(types, " "), "KeyRotated"), rotated; got != want {
		t.Errorf("history has %d rotations, %d were acknowledged: no lost update allowed", got, want)
	}
	if types[0] != "KeyCreated" || types[len(types)-1] != "KeyRevoked" || strings.Count(strings.Join(types, " "), "KeyRevoked") != 1 {
		t.Errorf("history = %v, want created first and one revocation last", types)
	}
	var view keyView
	h.must(http.StatusOK, "GET", path, admin, nil).json(t, &view)
	if view.Status != "revoked" || view.Version != evs[len(evs)-1].Seq {
		t.Errorf("key = %s v%d, want revoked at the last event's seq %d", view.Status, view.Version, evs[len(evs)-1].Seq)
	}
	for _, s := range secrets {
		if s != "" && h.verify(s).Code != domain.VerifyRevoked {
			t.Error("a secret from an acknowledged rotation is not REVOKED")
		}
	}
	t.Logf("%d rotations and %d revocation acknowledged of %d writers", rotated, revoked, writers)
}

// TestConcurrentRotationsLoseNothing races 50 rotations on one key: each is
// acknowledged or refused with 409, every acknowledged one is in the
// history, and exactly one secret — the last one stored — stays valid.
func TestConcurrentRotationsLoseNothing(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme")
	k := h.create("acme", admin, map[string]any{"name": "rotated a lot"}).Key
	const writers = 50
	secrets := make([]string, writers)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-gate
			res := h.request("POST", "/v1/orgs/acme/keys/"+k.ID+"/rotate", admin, nil)
			switch res.StatusCode {
			case http.StatusOK:
				var out issued
				res.json(t, &out)
				secrets[i] = out.Secret
			case http.StatusConflict:
			default:
				t.Errorf("rotation %d: %d %s", i, res.StatusCode, res.body)
			}
		})
	}
	close(gate)
	wg.Wait()

	acked, valid := 0, 0
	for _, s := range secrets {
		if s == "" {
			continue
		}
		acked++
		if h.verify(s).Valid {
			valid++
		}
	}
	rotations := 0
	for _, e := range h.history("acme", k.ID, admin) {
		if e.Type == "KeyRotated" {
			rotations++
		}
	}
	if rotations != acked || acked == 0 {
		t.Errorf("%d rotations acknowledged, %d in the history", acked, rotations)
	}
	if valid != 1 {
		t.Errorf("%d acknowledged secrets verify VALID, want exactly the last one", valid)
	}
	t.Logf("%d of %d concurrent rotations acknowledged, the rest 409", acked, writers)
}
