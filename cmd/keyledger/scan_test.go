package main

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// TestScanFindsKeysInATree: keyledger scan walks a generated tree and
// prints, sorted, file:line and the masked form of every key with a valid
// checksum: in source, .env files and logs, two on a line, one across the
// scanner's 1 MiB read boundary, one inside a binary file. Broken
// checksums, keys inside longer words, random binary data and anything
// under .git are not reported, nor is the key itself ever printed. It
// exits 1 when it finds a key, 0 on a clean tree.
func TestScanFindsKeysInATree(t *testing.T) {
	dir := t.TempDir()
	key := func() string {
		k, err := domain.GenerateSecret("c8k", nil)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	broken := func(k string) string { return k[:10] + map[bool]string{true: "B", false: "A"}[k[10] == 'A'] + k[11:] }
	write := func(name string, body []byte) {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	var keys []string
	expect := func(name string, line int, k string) {
		keys = append(keys, k)
		want = append(want, fmt.Sprintf("%s:%d: %s", filepath.Join(dir, name), line, domain.MaskSecret(k)))
	}

	k1, k2, k3 := key(), key(), key()
	write("app/config.go", []byte("package config\n\n// the billing key\nconst billing = \""+k1+"\"\n"))
	expect("app/config.go", 4, k1)
	write("app/.env", []byte("DEBUG=1\nAPI_KEY="+k2+" OTHER="+k3+"\n"))
	expect("app/.env", 2, k2)
	expect("app/.env", 2, k3)
	write("app/near-misses.txt", []byte(broken(key())+"\nX"+key()+"\n"+key()+"9\n"+strings.Repeat("_", 200)+"\n"))

	// A log file with a key across the 1 MiB read boundary.
	var log strings.Builder
	lines := 0
	for log.Len() < scanChunk-100 {
		log.WriteString("2026-12-02T10:00:00Z GET /v1/orgs/acme/keys 200 a_b_c\n")
		lines++
	}
	k4 := key()
	log.WriteString(strings.Repeat("x", scanChunk-20-log.Len()) + " " + k4 + "\nend\n")
	write("logs/access.log", []byte(log.String()))
	expect("logs/access.log", lines+1, k4)

	// Binary files: random bytes, and random bytes holding a key.
	noise := make([]byte, 3<<20)
	_, _ = rand.Read(noise)
	write("bin/random.bin", noise)
	k5 := key()
	withKey := slices.Concat(noise[:5000], []byte{0, '"'}, []byte(k5), []byte{'"', 0}, noise[5000:9000])
	write("bin/app", withKey)
	expect("bin/app", 1+strings.Count(string(withKey[:5002]), "\n"), k5)

	write(".git/objects/ab/cdef", []byte(key()))
	if err := os.Symlink(filepath.Join(dir, "app/config.go"), filepath.Join(dir, "link.go")); err != nil {
		t.Fatal(err)
	}

	slices.SortStableFunc(want, func(a, b string) int { // by file, then in file order
		return strings.Compare(a[:strings.LastIndex(a[:strings.LastIndex(a, ":")], ":")], b[:strings.LastIndex(b[:strings.LastIndex(b, ":")], ":")])
	})
	out, stderr, err := runBinary(t, dir, nil, "scan", dir)
	got := strings.Split(strings.TrimSpace(out), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("scan printed:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
	if err == nil || !strings.Contains(stderr, fmt.Sprintf("%d keys found", len(want))) {
		t.Errorf("scan with keys: %v %s, want exit 1 saying %d keys found", err, stderr, len(want))
	}
	for _, k := range keys {
		if strings.Contains(out+stderr, k) {
			t.Errorf("scan printed the key %s itself", domain.MaskSecret(k))
		}
	}

	clean := filepath.Join(dir, "bin")
	os.Remove(filepath.Join(clean, "app"))
	if out, stderr, err := runBinary(t, dir, nil, "scan", clean); err != nil || out != "" || !strings.Contains(stderr, "0 keys found") {
		t.Errorf("scan of a clean tree: %v %q %s", err, out, stderr)
	}
}

// TestScanReportsWhatItFinds: keyledger scan --report sends each key it
// finds to a running keyledger's POST /v1/leaks, which revokes it and
// records the file and line; a key of no key of that keyledger is said to
// be so, and revokes nothing.
func TestScanReportsWhatItFinds(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env)
	status, body := call(t, "POST", p.url+"/v1/orgs/acme/keys", admin, `{"name":"committed by mistake"}`)
	if status != 201 {
		t.Fatalf("create: %d %s", status, body)
	}
	var k struct {
		Key    struct{ ID string }
		Secret string
	}
	_ = json.Unmarshal([]byte(body), &k)
	stranger, _ := domain.GenerateSecret("c8k", nil)
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, ".env"), []byte("A=1\nAPI_KEY="+k.Secret+"\nOTHER="+stranger+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runBinary(t, tree, nil, "scan", "--report", p.url, "--report-token", admin, ".")
	if err == nil || !strings.Contains(stderr, domain.MaskSecret(k.Secret)+": revoked") || !strings.Contains(stderr, domain.MaskSecret(stranger)+": not a key of this keyledger") {
		t.Fatalf("scan --report: %v\n%s\n%s", err, out, stderr)
	}
	if strings.Contains(out+stderr, k.Secret) {
		t.Error("scan printed the key")
	}
	status, body = call(t, "POST", p.url+"/v1/verify", "", `{"key":"`+k.Secret+`"}`)
	if !strings.Contains(body, `"code":"REVOKED"`) {
		t.Errorf("the reported key verifies: %d %s", status, body)
	}
	_, hist := call(t, "GET", p.url+"/v1/orgs/acme/keys/"+k.Key.ID+"/events", admin, "")
	if !strings.Contains(hist, `"type":"KeyLeakReported"`) || !strings.Contains(hist, `file://`) || !strings.Contains(hist, `.env#L2`) {
		t.Errorf("the key's history: %s", hist)
	}
}
