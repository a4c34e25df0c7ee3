package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/keyledger/keyledger/verifier"
)

// TestUpgradeMovesTheStreamIntoTheNewAccounts follows docs/OPERATIONS.md,
// Upgrades, for a cluster set up with the nats-auth.conf of before the
// read-only account: an authorization { users } block, which has the
// service in NATS's global account. keyledger runs there and manages
// keys; a backup is taken with the old configuration; the server is
// switched, on the same store, to a new nats-credentials block; the
// backup is restored with the new service credential, and keyledger
// serves the same listing and the same verify answers, and audit verify
// with the new read-only credential says intact.
func TestUpgradeMovesTheStreamIntoTheNewAccounts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nats-server processes: not in -short")
	}
	bin := buildNATSServer(t)
	dir := t.TempDir()
	store := filepath.Join(dir, "js")

	// Before: the service's NKey user in an authorization block.
	old := filepath.Join(dir, "old")
	if err := os.MkdirAll(old, 0o700); err != nil {
		t.Fatal(err)
	}
	kp, _ := nkeys.CreateUser()
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	oldSeed := filepath.Join(old, "keyledger-service.nk")
	if err := os.WriteFile(oldSeed, append(seed, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "nats-auth.conf"), []byte("authorization {\n  users: [ { nkey: "+pub+" } ]\n}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldOpt, err := verifier.Credentials(oldSeed)
	if err != nil {
		t.Fatal(err)
	}
	url, node := natsServerWith(t, bin, old, store, oldOpt)
	signing := filepath.Join(dir, "signing.pem")
	env := []string{"KEYLEDGER_NATS_URL=" + url, "KEYLEDGER_NATS_CREDS=" + oldSeed, "KEYLEDGER_SIGNING_KEY=" + signing}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	addr := freeAddr(t)
	p := serveProcess(t, dir, addr, append(env, "KEYLEDGER_HTTP_ADDR="+addr))
	secrets, seq := manage(t, p.url, admin)
	before := observe(t, p.url, admin, secrets, seq)
	file := filepath.Join(dir, "before.backup")
	if out, stderr, err := runBinary(t, dir, env, "backup", "--out", file); err != nil {
		t.Fatalf("backup with the old configuration: %v\n%s%s", err, out, stderr)
	}
	p.stop(t)
	node.kill()

	// After: the new block, on the same store.
	creds := filepath.Join(dir, "creds")
	if _, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", creds); err != nil {
		t.Fatalf("nats-credentials: %v\n%s", err, stderr)
	}
	newSeed := filepath.Join(creds, "keyledger-service.nk")
	newOpt, err := verifier.Credentials(newSeed)
	if err != nil {
		t.Fatal(err)
	}
	url, _ = natsServerWith(t, bin, creds, store, newOpt)
	restoredKey := filepath.Join(dir, "restored-signing.pem")
	env = []string{"KEYLEDGER_NATS_URL=" + url, "KEYLEDGER_NATS_CREDS=" + newSeed, "KEYLEDGER_SIGNING_KEY=" + restoredKey}
	if out, stderr, err := runBinary(t, dir, env, "restore", "--in", file); err != nil {
		t.Fatalf("restore with the new service credential: %v\n%s%s", err, out, stderr)
	}
	addr = freeAddr(t)
	p = serveProcess(t, dir, addr, append(env, "KEYLEDGER_HTTP_ADDR="+addr))
	before.compare(t, observe(t, p.url, admin, secrets, seq))

	waitForCheckpoint(t, p.url)
	audit := []string{"KEYLEDGER_NATS_URL=" + url, "KEYLEDGER_NATS_CREDS=" + filepath.Join(creds, "keyledger-subscriber.nk")}
	if out, stderr, err := runBinary(t, dir, audit, "audit", "verify", "--pubkey-url", p.url); err != nil || !strings.HasPrefix(out, "intact") {
		t.Fatalf("audit verify with the new read-only credential: %v\n%s%s", err, out, stderr)
	}
}
