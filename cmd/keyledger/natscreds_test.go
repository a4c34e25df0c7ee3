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

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
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
	url, _ := natsServerWith(t, bin, dir, filepath.Join(t.TempDir(), "js"), service)
	return url
}

// natsServerWith starts one nats-server process, JetStream on storeDir,
// with dir/nats-auth.conf included, and waits until the service
// credential reaches JetStream.
func natsServerWith(t *testing.T, bin, dir, storeDir string, service nats.Option) (string, *natsNode) {
	t.Helper()
	addr := freeAddr(t)
	conf := filepath.Join(dir, "server.conf")
	body := fmt.Sprintf("listen: %s\njetstream { store_dir: %q }\ninclude \"nats-auth.conf\"\n", addr, storeDir)
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
				return n.url, n
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

			// Nor can it have an answer land in the service's account.
			var key struct{ ID string }
			_ = json.Unmarshal([]byte(body), &key)
			natstest.SubscriberAnswersStayInItsAccount(t, ctx, svcJS, sub, events.Subject("acme", key.ID, domain.TypeKeyRevoked))

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

// TestNatsCredentialsRefusals: what nats-credentials refuses, and that a
// second run overwrites nothing without --force.
func TestNatsCredentialsRefusals(t *testing.T) {
	dir := t.TempDir()
	t.Run("MissingOutIsRefused", func(t *testing.T) {
		_, stderr, err := runBinary(t, dir, nil, "nats-credentials")
		if err == nil || !strings.Contains(stderr, "needs --out DIR") {
			t.Errorf("no --out: %v %s", err, stderr)
		}
	})
	t.Run("UnknownFormatIsRefused", func(t *testing.T) {
		_, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", filepath.Join(dir, "x"), "--format", "jwt")
		if err == nil || !strings.Contains(stderr, "--format must be nkeys or creds") {
			t.Errorf("--format jwt: %v %s", err, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
			t.Error("a refused run made the directory")
		}
	})
	t.Run("RouteThatIsNotHostPortIsRefused", func(t *testing.T) {
		_, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", filepath.Join(dir, "r"), "--routes", "nats-1:6222,nats-2")
		if err == nil || !strings.Contains(stderr, `"nats-2" is not HOST:PORT`) {
			t.Errorf("--routes nats-1:6222,nats-2: %v %s", err, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "r")); err == nil {
			t.Error("a refused run made the directory")
		}
	})
	for _, format := range []string{"nkeys", "creds"} {
		t.Run("SecondRunOverwritesNothingWithoutForce/"+format, func(t *testing.T) {
			out := filepath.Join(dir, format)
			if _, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", out, "--format", format); err != nil {
				t.Fatal(err, stderr)
			}
			before, _ := os.ReadFile(filepath.Join(out, "nats-auth.conf"))
			_, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", out, "--format", format)
			if err == nil || !strings.Contains(stderr, "--force") || !strings.Contains(stderr, filepath.Join(out, "nats-auth.conf")) {
				t.Fatalf("second run: %v %s", err, stderr)
			}
			if after, _ := os.ReadFile(filepath.Join(out, "nats-auth.conf")); string(after) != string(before) {
				t.Fatal("the refused run changed nats-auth.conf")
			}
			if _, stderr, err := runBinary(t, dir, nil, "nats-credentials", "--out", out, "--format", format, "--force"); err != nil {
				t.Fatal(err, stderr)
			}
			after, _ := os.ReadFile(filepath.Join(out, "nats-auth.conf"))
			if string(after) == string(before) {
				t.Fatal("--force kept the old configuration")
			}
			entries, _ := os.ReadDir(out)
			for _, e := range entries {
				if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 || strings.HasPrefix(e.Name(), ".") {
					t.Errorf("after --force: %s, mode %v", e.Name(), fi.Mode().Perm())
				}
			}
		})
	}
}

// TestNatsCredsOfTheWrongKindIsNamed: a file that is neither a seed nor a
// .creds file is refused before any connection, naming the file and what
// was expected, never a bare "Authorization Violation".
func TestNatsCredsOfTheWrongKindIsNamed(t *testing.T) {
	dir := t.TempDir()
	pub, stderr, err := runBinary(t, dir, nil, "keygen", filepath.Join(dir, "signing.pem"))
	if err != nil {
		t.Fatal(err, stderr)
	}
	pubFile := filepath.Join(dir, "signers.pem")
	_ = os.WriteFile(pubFile, []byte(pub), 0o644)
	wrong := filepath.Join(dir, "service.nk") // the suffix of a seed; a PEM inside
	_ = os.WriteFile(wrong, []byte(pub), 0o600)
	env := []string{"KEYLEDGER_NATS_URL=nats://127.0.0.1:1", "KEYLEDGER_NATS_CREDS=" + wrong}
	for name, args := range map[string][]string{
		"Audit": {"audit", "verify", "--pubkey", pubFile},
		"Serve": {"serve", "--signing-key", filepath.Join(dir, "signing.pem")},
	} {
		t.Run(name, func(t *testing.T) {
			stderr, err := runBriefly(t, dir, env, args...)
			if err == nil || !strings.Contains(stderr, wrong) || !strings.Contains(stderr, "neither an NKey user seed") ||
				strings.Contains(stderr, "Authorization Violation") {
				t.Errorf("%v\n%s", err, stderr)
			}
		})
	}
}

// TestAuditWithPublicMaterialOnly: audit pubkey from a private or a public
// key file, and what audit verify --nats-url says when it has no public
// key — even beside a data/audit-signing-key.pem, which it never reads.
func TestAuditWithPublicMaterialOnly(t *testing.T) {
	dir := t.TempDir()
	_ = os.MkdirAll(filepath.Join(dir, "data"), 0o700)
	priv := filepath.Join(dir, "data", "audit-signing-key.pem")
	pub, stderr, err := runBinary(t, dir, nil, "keygen", priv)
	if err != nil {
		t.Fatal(err, stderr)
	}
	pubFile := filepath.Join(dir, "pub.pem")
	_ = os.WriteFile(pubFile, []byte(pub), 0o644)
	other, _, _ := runBinary(t, dir, nil, "keygen", filepath.Join(dir, "other.pem"))
	two := filepath.Join(dir, "two.pem")
	_ = os.WriteFile(two, []byte(pub+other), 0o644)
	junk := filepath.Join(dir, "junk.pem")
	_ = os.WriteFile(junk, []byte("not a key\n"), 0o644)

	for _, c := range []struct {
		name    string
		args    []string
		wantOut string // "": an error is wanted
		wantErr []string
	}{
		{"PubkeyFromPrivateKey", []string{"audit", "pubkey", "--key", priv}, pub, nil},
		{"PubkeyFromPublicKey", []string{"audit", "pubkey", "--key", pubFile}, pub, nil},
		{"PubkeyFromJunkIsRefused", []string{"audit", "pubkey", "--key", junk}, "", []string{junk, "not a PEM file"}},
		{"PubkeyFromATrustSetIsRefused", []string{"audit", "pubkey", "--key", two}, "", []string{"more than one PEM block"}},
		{"PubkeyFromAMissingFile", []string{"audit", "pubkey", "--key", filepath.Join(dir, "missing.pem")}, "", []string{"--key", "missing.pem"}},
		{"PubkeyFromNoServer", []string{"audit", "pubkey", "--url", "http://" + freeAddr(t)}, "", []string{"--url", "/v1/audit/pubkey"}},
		{"PubkeyFromNotAURL", []string{"audit", "pubkey", "--url", "localhost:8080"}, "", []string{"not an http or https URL"}},
		{"PubkeyWithNatsURLAndNothingSaysWhatItNeeds", []string{"audit", "pubkey", "--nats-url", "nats://127.0.0.1:1"}, "", []string{"--url URL", "--key FILE"}},
		{"VerifyWithNatsURLAndNoPublicKeySaysWhatItNeeds", []string{"audit", "verify", "--nats-url", "nats://127.0.0.1:1"}, "",
			[]string{"--pubkey FILE", "--pubkey-url URL", "--nats-creds FILE", "never a private one"}},
		{"VerifyWithAPubkeyURLThatAnswersNothing", []string{"audit", "verify", "--nats-url", "nats://127.0.0.1:1", "--pubkey-url", "http://" + freeAddr(t)}, "",
			[]string{"--pubkey-url", "/v1/audit/signers"}},
		{"VerifyWithTwoTrustSetsIsRefused", []string{"audit", "verify", "--pubkey", pubFile, "--pubkey-url", "http://127.0.0.1:1"}, "", []string{"give the trust set once"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, stderr, err := runBinary(t, dir, nil, c.args...)
			if c.wantOut != "" {
				if err != nil || out != c.wantOut {
					t.Fatalf("%v\n%s%s, want\n%s", err, out, stderr, c.wantOut)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %s", out)
			}
			for _, w := range c.wantErr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if strings.Contains(stderr, "audit-signing-key.pem") {
				t.Errorf("with --nats-url it looked for the embedded default's private key: %s", stderr)
			}
		})
	}
}

// TestServeWithNatsURLRefusesWithoutASigningKey: an unsigned deployment is
// not a default, and not an option either; the refusal says what to give.
func TestServeWithNatsURLRefusesWithoutASigningKey(t *testing.T) {
	dir := t.TempDir()
	for name, args := range map[string][]string{
		"NoKey":        {"serve", "--nats-url", "nats://127.0.0.1:1"},
		"AuditKeyNone": {"serve", "--nats-url", "nats://127.0.0.1:1", "--audit-key=none"},
		"SigningNone":  {"serve", "--nats-url", "nats://127.0.0.1:1", "--signing-key", "none"},
	} {
		t.Run(name, func(t *testing.T) {
			stderr, err := runBriefly(t, dir, nil, args...)
			if err == nil || !strings.Contains(stderr, "--signing-key FILE") || !strings.Contains(stderr, "no unsigned mode") {
				t.Errorf("%v\n%s", err, stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "none")); err == nil {
				t.Error("a signing key file named none was made")
			}
		})
	}
}
