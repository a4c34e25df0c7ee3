package main

import (
	"context"
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
