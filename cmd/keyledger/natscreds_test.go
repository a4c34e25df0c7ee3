package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/internal/natstest"
	"github.com/keyledger/keyledger/verifier"
)

// buildNATSServer builds nats-server from the module at the pinned
// version, as cluster() does.
func buildNATSServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

// lockedDownServer starts one nats-server process, JetStream on, with the
// nats-auth.conf that nats-credentials wrote to dir included as it is,
// and waits until the service credential reaches JetStream.
func lockedDownServer(t *testing.T, bin, dir string, service nats.Option) string {
	t.Helper()
	addr := freeAddr(t)
	conf := filepath.Join(dir, "server.conf")
	body := fmt.Sprintf("listen: %s\njetstream { store_dir: %q }\ninclude \"nats-auth.conf\"\n", addr, filepath.Join(t.TempDir(), "js"))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &natsNode{name: "n1", conf: conf, url: "nats://" + addr}
	n.start(t, bin)
	t.Cleanup(n.kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(n.url, service, nats.MaxReconnects(0))
		if err == nil {
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = js.AccountInfo(ctx)
			cancel()
			nc.Close()
			if err == nil {
				return n.url
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server with the generated configuration did not serve JetStream within 30 s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNatsCredentialsLockDownARealServer writes each format's credentials
// and configuration, runs a real nats-server with the configuration
// included unchanged, and checks what each client may do there: keyledger
// serves with the service credential; a verifier and an audit need only
// the read-only one and public keys, and it may neither publish an event
// nor delete the stream; an anonymous client is refused.
func TestNatsCredentialsLockDownARealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("runs nats-server processes: not in -short")
	}
	bin := buildNATSServer(t)
	for _, format := range []string{"nkeys", "creds"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			creds := filepath.Join(dir, "creds")
			out, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", creds, "--format", format)
			if err != nil {
				t.Fatalf("nats-credentials: %v\n%s", err, stderr)
			}
			conf, _ := os.ReadFile(filepath.Join(creds, "nats-auth.conf"))
			if out != string(conf) {
				t.Errorf("stdout is not the configuration written to nats-auth.conf")
			}
			ext := map[string]string{"nkeys": ".nk", "creds": ".creds"}[format]
			service, subscriber := filepath.Join(creds, "keyledger-service"+ext), filepath.Join(creds, "keyledger-subscriber"+ext)
			entries, _ := os.ReadDir(creds)
			for _, e := range entries {
				if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: mode %v, want 0600", e.Name(), fi.Mode().Perm())
				}
			}
			// The content tells the kind, not the name: the service runs
			// with a copy named like neither.
			raw, _ := os.ReadFile(service)
			renamed := filepath.Join(dir, "service-credential")
			if err := os.WriteFile(renamed, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			svcOpt, err := verifier.Credentials(service)
			if err != nil {
				t.Fatal(err)
			}
			url := lockedDownServer(t, bin, creds, svcOpt)

			env := []string{"KEYLEDGER_NATS_URL=" + url, "KEYLEDGER_NATS_CREDS=" + renamed,
				"KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem"), "KEYLEDGER_CHECKPOINT_INTERVAL=1s"}
			admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
			if err != nil {
				t.Fatalf("bootstrap with the service credential: %v\n%s", err, stderr)
			}
			addr := freeAddr(t)
			p := serveProcess(t, dir, addr, append(env, "KEYLEDGER_HTTP_ADDR="+addr))
			status, body := call(t, "POST", p.url+"/v1/orgs/acme/keys", strings.TrimSpace(admin), `{"name":"billing"}`)
			if status != 201 {
				t.Fatalf("create: %d %s", status, body)
			}
			var created struct{ Secret string }
			_ = json.Unmarshal([]byte(body), &created)
			if got := verifyCode(t, p.url, created.Secret, 0); got != "VALID" {
				t.Fatalf("verify over HTTP: %s", got)
			}

			// The verifier package, with the read-only credential and the
			// trust set as public keys.
			subOpt, err := verifier.Credentials(subscriber)
			if err != nil {
				t.Fatal(err)
			}
			_, pemSet := call(t, "GET", p.url+"/v1/audit/signers", "", "")
			signers, err := verifier.ParseSigners([]byte(pemSet))
			if err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, 16)
			sub, err := nats.Connect(url, subOpt, nats.CustomInboxPrefix(verifier.SubscriberInbox), nats.MaxReconnects(0),
				nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
					select {
					case errs <- err:
					default:
					}
				}))
			if err != nil {
				t.Fatalf("the read-only credential cannot connect: %v", err)
			}
			defer sub.Close()
			subJS, _ := jetstream.New(sub)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			v, err := verifier.New(ctx, subJS, verifier.Options{Signers: signers, Logger: natstest.Quiet()})
			if err != nil {
				t.Fatalf("verifier with the read-only credential: %v", err)
			}
			defer v.Close()
			if err := v.WaitReady(ctx); err != nil {
				t.Fatal(err)
			}
			if r := v.Verify(created.Secret); !r.Valid() {
				t.Fatalf("the verifier says %s", r.Code)
			}

			// The audit, with the read-only credential and public keys only:
			// fetched from the running instance, or pinned in a file.
			waitForCheckpoint(t, p.url)
			audit := []string{"KEYLEDGER_NATS_URL=" + url, "KEYLEDGER_NATS_CREDS=" + subscriber}
			out, stderr, err = runBinary(t, dir, audit, "audit", "verify", "--pubkey-url", p.url)
			if err != nil || !strings.HasPrefix(out, "intact") {
				t.Fatalf("audit verify --pubkey-url: %v\n%s%s", err, out, stderr)
			}
			pub, stderr, err := runBinary(t, dir, nil, "audit", "pubkey", "--url", p.url)
			if err != nil {
				t.Fatalf("audit pubkey --url: %v %s", err, stderr)
			}
			pinned := filepath.Join(dir, "signers.pem")
			if err := os.WriteFile(pinned, []byte(pub), 0o644); err != nil {
				t.Fatal(err)
			}
			out, stderr, err = runBinary(t, dir, audit, "audit", "verify", "--pubkey", pinned)
			if err != nil || !strings.HasPrefix(out, "intact") {
				t.Fatalf("audit verify --pubkey: %v\n%s%s", err, out, stderr)
			}

			// What the read-only credential may not do.
			short, cancelShort := context.WithTimeout(context.Background(), 3*time.Second)
			if _, err := subJS.Publish(short, "keyledger.events.acme.key_01ARZ3NDEKTSV4RRFFQ69G5FAV.created", []byte("{}")); err == nil {
				t.Error("the read-only credential published an event")
			}
			cancelShort()
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
					t.Errorf("the refused publish gave %v, want a permissions violation", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("the server said nothing of the refused publish")
			}
			short, cancelShort = context.WithTimeout(context.Background(), 3*time.Second)
			if err := subJS.DeleteStream(short, "KEYLEDGER"); err == nil {
				t.Error("the read-only credential deleted the stream")
			}
			cancelShort()
			svc, err := nats.Connect(url, svcOpt, nats.MaxReconnects(0), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			svcJS, _ := jetstream.New(svc)
			short, cancelShort = context.WithTimeout(context.Background(), 3*time.Second)
			if err := svcJS.DeleteStream(short, "KEYLEDGER"); err == nil {
				t.Error("the service credential deleted the stream; the embedded server forbids it that")
			}
			cancelShort()
			short, cancelShort = context.WithTimeout(context.Background(), 5*time.Second)
			defer cancelShort()
			if _, err := svcJS.Stream(short, "KEYLEDGER"); err != nil {
				t.Fatalf("the stream is gone: %v", err)
			}

			// Nobody else gets in.
			nc, err := nats.Connect(url, nats.MaxReconnects(0))
			if err == nil {
				nc.Close()
				t.Fatal("an anonymous client connected")
			}
			if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
				t.Errorf("the anonymous client was refused with %v, want an authorization violation", err)
			}
		})
	}
}

// waitForCheckpoint waits until an instance has signed a checkpoint, which
// audit verify needs.
func waitForCheckpoint(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if status, _ := call(t, "GET", url+"/v1/audit/head", "", ""); status == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no signed checkpoint within 30 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
