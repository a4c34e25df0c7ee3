package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
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
	emb, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(dir, "data"), Logger: natstest.Quiet()})
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

// TestAttackOneStepKeyReplacementKeepsTheStolenKey: the signing key is
// stolen. The operator does what an incident calls for in one step: puts
// a new key in the key file, retires the stolen one in the trust set, and
// sends SIGHUP. The reload checks the new trust set against the key in
// use before switching to the new key, finds the key in use retired, and
// refuses the whole reload, "keeping the ones in use": the instance goes
// on signing with the stolen key and trusting everything it signs.
func TestAttackOneStepKeyReplacementKeepsTheStolenKey(t *testing.T) {
	dir := t.TempDir()
	addr, natsAddr := freeAddr(t), freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_NATS_LISTEN=" + natsAddr}
	if _, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin"); err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	p := serveProcess(t, dir, addr, env)
	keyFile := filepath.Join(dir, "data", "audit-signing-key.pem")
	stolen, err := events.LoadOrCreateSigningKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	oldPub := string(events.PublicKeyPEM(stolen.Public().(ed25519.PublicKey)))
	newKey := filepath.Join(dir, "new-signing-key.pem")
	newPub, _, err := runBinary(t, dir, nil, "keygen", newKey)
	if err != nil {
		t.Fatal(err)
	}
	_, ready := call(t, "GET", p.url+"/readyz", "", "")
	var r struct {
		AppliedSeq uint64 `json:"applied_seq"`
	}
	_ = json.Unmarshal([]byte(ready), &r)
	retired := strings.Replace(oldPub, "-----BEGIN PUBLIC KEY-----\n", fmt.Sprintf("-----BEGIN PUBLIC KEY-----\n%s: %d\n\n", events.RetiredAfterHeader, r.AppliedSeq), 1)
	if err := os.WriteFile(filepath.Join(dir, "data", "event-signers.pem"), []byte(retired+newPub), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(newKey, keyFile); err != nil {
		t.Fatal(err)
	}
	before := p.stderr.String()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		after := strings.TrimPrefix(p.stderr.String(), before)
		if strings.Contains(after, "SIGHUP:") {
			t.Errorf("the one-step replacement was refused, and the stolen key stays in use:\n%s", lastLines(after, 1))
			break
		}
		if strings.Contains(after, "signing events and checkpoints") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no word of the reload within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, pub := call(t, "GET", p.url+"/v1/audit/pubkey", "", "")
	if pub == oldPub {
		t.Error("after the SIGHUP the instance still signs with the stolen key")
	}
	// The thief's event, signed after the retirement point.
	js := insider(t, dir, natsAddr)
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	e, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "thief", Scopes: []string{domain.ScopeManage}, By: domain.SystemPrincipal("x", "x")}, time.Now(), 0, secret)
	body, _ := events.Encode(e)
	m := &nats.Msg{Subject: events.Subject("acme", e.KeyID, domain.TypeKeyCreated), Data: body}
	events.NewSigner(stolen).SignEvent(m)
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	if got := verifyCode(t, p.url, secret, ack.Sequence); got == domain.VerifyValid {
		t.Error("the thief's key, signed with the stolen key after the point it was retired at, verifies VALID")
	}
}
