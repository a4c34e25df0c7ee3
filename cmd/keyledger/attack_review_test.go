package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAttackAuditPrintsTheForgersTerminalEscapes: `audit verify` names
// each forged event by its type, org and key as the forged envelope
// states them, and prints them as they are. The insider forges an event
// whose org_id holds terminal escapes: on the auditor's terminal they
// erase the NOT INTACT line and write "intact" in its place (the exit
// status alone still says otherwise).
func TestAttackAuditPrintsTheForgersTerminalEscapes(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, err := runBinary(t, dir, nil, "bootstrap", "--org", "acme", "--name", "admin"); err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	emb, err := events.StartEmbedded(events.EmbeddedConfig{Dir: filepath.Join(dir, "data"), Logger: natstest.Quiet()})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(emb.Conn)
	body := `{"event_id":"x","type":"KeyCreated","org_id":"\u001b[1A\u001b[2K\rintact up to sequence 2: 1 events, 1 checkpoints\u001b[8m","key_id":"k","data":{}}`
	if _, err := js.Publish(context.Background(), "keyledger.events.acme.k.created", []byte(body)); err != nil {
		t.Fatal(err)
	}
	emb.Close()

	out, _, err := runBinary(t, dir, nil, "audit", "verify")
	if err == nil {
		t.Fatalf("audit verify passed:\n%q", out)
	}
	if strings.ContainsAny(out, "\x1b\r") {
		t.Errorf("audit verify writes the forger's control characters to the auditor's terminal:\n%q", out)
	}
}

// TestAttackWritableTrustSetIsUsed: the trust set decides whose signature
// mints keys, as authorized_keys decides who logs in — and ssh refuses an
// authorized_keys its group or others may write. keyledger checks the
// mode of its signing key, never of --event-signers (nor of
// <data-dir>/event-signers.pem, read by default): a trust set anyone may
// write is used, and whoever adds their key to it signs events that
// count.
func TestAttackWritableTrustSetIsUsed(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr}
	serveProcess(t, dir, addr, env).stop(t)
	own, err := events.LoadOrCreateSigningKey(filepath.Join(dir, "data", "audit-signing-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	stranger, _, _ := ed25519.GenerateKey(rand.Reader)
	signers := filepath.Join(t.TempDir(), "event-signers.pem")
	pemFile := append(events.PublicKeyPEM(own.Public().(ed25519.PublicKey)), events.PublicKeyPEM(stranger)...)
	if err := os.WriteFile(signers, pemFile, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(signers, 0o666); err != nil {
		t.Fatal(err)
	}
	stderr, err := runBriefly(t, dir, append(env, "KEYLEDGER_EVENT_SIGNERS="+signers), "serve")
	if err == nil {
		t.Errorf("serve with a trust set of mode 0666 ran, trusting whoever may write it:\n%s", lastLines(stderr, 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
