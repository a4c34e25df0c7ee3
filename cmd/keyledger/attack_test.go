package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestAttackStaleInstanceFailsClosed cuts NATS from under `serve
// --max-staleness 1s`: verifications keep answering from memory for that
// long, then answer 503 with Retry-After (a revocation made meanwhile
// elsewhere would not be seen), and vouch again once NATS is back.
func TestAttackStaleInstanceFailsClosed(t *testing.T) {
	dir := t.TempDir()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	port, _ := strconv.Atoi(p)
	ns := natsOn(t, port, dir+"/nats")
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_NATS_URL=" + ns.ClientURL(), "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem")}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	k := serveProcess(t, dir, addr, env, "--max-staleness", "1s")
	verify := func() (int, string) {
		res, err := http.Post(k.url+"/v1/verify", "application/json", bytes.NewReader([]byte(`{"key":"`+admin+`"}`)))
		if err != nil {
			return 0, ""
		}
		res.Body.Close()
		return res.StatusCode, res.Header.Get("Retry-After")
	}
	if code, _ := verify(); code != http.StatusOK {
		t.Fatalf("verify before the outage: %d", code)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, retry := verify()
		if code == http.StatusServiceUnavailable && retry != "" {
			break
		}
		if code != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("verify while NATS is down: %d (Retry-After %q); want 200 from memory, then 503 past --max-staleness", code, retry)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ns = natsOn(t, port, dir+"/nats")
	deadline = time.Now().Add(30 * time.Second)
	for {
		if code, _ := verify(); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("verify did not vouch again within 30 s of NATS coming back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAttackAttachingNeverLoosensTheStream replays item 11 of the attack:
// attaching to a cluster with a lower --stream-replicas (the default, 1)
// must not shrink an R3 stream to R1, nor its buckets; a stream with fewer
// replicas than asked, or one that allows deletes or drops old events, is
// refused with a message saying what differs; nothing is ever loosened.
func TestAttackAttachingNeverLoosensTheStream(t *testing.T) {
	nodes := cluster(t)
	dir := t.TempDir()
	env := []string{"KEYLEDGER_NATS_URL=" + urls(nodes), "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem")}
	if _, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin", "--stream-replicas", "3"); err != nil {
		t.Fatalf("bootstrap on R3: %v\n%s", err, stderr)
	}
	if _, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "second admin"); err != nil {
		t.Fatalf("bootstrap with the default replicas on an R3 stream: %v\n%s", err, stderr)
	}
	nc, err := nats.Connect(urls(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, "KEYLEDGER")
	if err != nil {
		t.Fatal(err)
	}
	if got := stream.CachedInfo().Config.Replicas; got != 3 {
		t.Errorf("after attaching with --stream-replicas 1 the stream has %d replicas, want 3 (never lowered)", got)
	}

	_, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "x", "--stream-replicas", "5")
	if err == nil || !strings.Contains(stderr, "3 replicas") || !strings.Contains(stderr, "5") {
		t.Errorf("attaching with --stream-replicas 5 to an R3 stream: %v, %q; want a refusal naming both", err, stderr)
	}

	// An operator loosened the stream behind keyledger's back: deletes
	// allowed, old events dropped after a day.
	cfg := stream.CachedInfo().Config
	cfg.DenyDelete, cfg.DenyPurge = false, false
	if err := js.DeleteStream(ctx, "KEYLEDGER"); err != nil {
		t.Fatal(err)
	}
	cfg.MaxAge = 24 * time.Hour
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	_, stderr, err = runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "y", "--stream-replicas", "3")
	for _, want := range []string{"delete", "purge", "max age"} {
		if err == nil || !strings.Contains(strings.ToLower(stderr), want) {
			t.Errorf("attaching to a stream that allows what keyledger forbids: %v, %q; want a refusal naming %q", err, stderr, want)
		}
	}
	if info, err := js.Stream(ctx, "KEYLEDGER"); err != nil || info.CachedInfo().Config.DenyDelete || info.CachedInfo().Config.MaxAge != 24*time.Hour {
		t.Errorf("the refused attach changed the stream: %v %+v", err, info.CachedInfo().Config)
	}
}

// TestAttackReadableSigningKeyIsRefused replays item 9 of the attack: a
// signing key that its group or everyone may read is refused at start, as
// ssh refuses such a key, with the command that fixes it.
func TestAttackReadableSigningKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr}
	serveProcess(t, dir, addr, env).stop(t)
	key := filepath.Join(dir, "data", "audit-signing-key.pem")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		stderr, err := runBriefly(t, dir, env, "serve")
		if err == nil || !strings.Contains(stderr, "chmod 600 "+key) {
			t.Errorf("serve with a signing key of mode %o: %v, %q; want a refusal saying chmod 600 %s", mode, err, stderr, key)
		}
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	serveProcess(t, dir, addr, env).stop(t)
}

// runBriefly runs the binary and kills it if it is still running after
// 10 s: for commands that should refuse to start.
func runBriefly(t *testing.T, dir string, env []string, args ...string) (stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		return errOut.String(), nil // it ran: it did not refuse
	}
	return errOut.String(), err
}
