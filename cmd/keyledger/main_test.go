package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// binary is keyledger built once for these tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keyledger-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "keyledger")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build keyledger: %v\n%s", err, out)
		os.Exit(1)
	}
	// KEYLEDGER_TEST_BINARY runs the tests against another build, such as
	// an earlier release: how an attack test is seen failing on old code.
	if other := os.Getenv("KEYLEDGER_TEST_BINARY"); other != "" {
		binary = other
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// process is a running `keyledger serve`.
type process struct {
	cmd    *exec.Cmd
	url    string
	stderr *lockedBuffer
	done   chan error
}

// serveProcess starts the binary in dir with args and env, and waits until
// /readyz answers 200.
func serveProcess(t *testing.T, dir, addr string, env []string, args ...string) *process {
	t.Helper()
	p := startServe(t, dir, addr, env, args...)
	p.waitReady(t, 30*time.Second)
	return p
}

// startServe starts the binary in dir with args and env, and returns at
// once; it is stopped when the test ends.
func startServe(t *testing.T, dir, addr string, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	p := &process{cmd: cmd, url: "http://" + addr, stderr: &lockedBuffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// waitReady waits until /readyz answers 200, failing the test past within
// or when the process exits.
func (p *process) waitReady(t *testing.T, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		res, err := http.Get(p.url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.done:
			p.done <- err // for stop
			t.Fatalf("serve exited before it was ready: %v\n%s", err, p.stderr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer 200 within %s\n%s", within, p.stderr)
		}
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM\n%s", err, p.stderr)
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		t.Errorf("serve did not stop within 30s of SIGTERM\n%s", p.stderr)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func runBinary(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func TestServeWithNoFlags(t *testing.T) {
	if ln, err := net.Listen("tcp", "127.0.0.1:8080"); err != nil {
		t.Skipf("127.0.0.1:8080 is taken on this machine, so serve cannot run with no flags: %v", err)
	} else {
		ln.Close()
	}
	dir := t.TempDir()
	p := serveProcess(t, dir, "127.0.0.1:8080", nil)
	if fi, err := os.Stat(filepath.Join(dir, "data", "jetstream")); err != nil || !fi.IsDir() {
		t.Errorf("no JetStream store in ./data: %v", err)
	}
	res, err := http.Get(p.url + "/healthz")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %v %v", res, err)
	}
	p.stop(t)
	if !strings.Contains(p.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log:\n%s", p.stderr)
	}
}

func TestBootstrapRefusesTheStoreOfARunningServer(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + dir, "KEYLEDGER_HTTP_ADDR=" + addr}
	serveProcess(t, dir, addr, env)
	_, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin")
	if err == nil || !strings.Contains(stderr, "in use by a running keyledger") {
		t.Errorf("bootstrap on a running store: %v %s", err, stderr)
	}
}

func TestBootstrapFailures(t *testing.T) {
	dir := t.TempDir()
	env := []string{"KEYLEDGER_DATA_DIR=" + dir}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"MissingOrg", []string{"bootstrap", "--name", "a"}, "needs --org and --name"},
		{"BadOrg", []string{"bootstrap", "--org", "ac.me", "--name", "a"}, "org id must match"},
		{"BadScope", []string{"bootstrap", "--org", "acme", "--name", "a", "--scopes", "Keys"}, "scope"},
		{"BadPrefix", []string{"bootstrap", "--org", "acme", "--name", "a", "--key-prefix", "C8K"}, "prefix"},
		{"UnknownCommand", []string{"frobnicate"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := runBinary(t, dir, env, tc.args...)
			if err == nil || !strings.Contains(stderr, tc.want) || stdout != "" {
				t.Errorf("%v: err %v, stdout %q, stderr %q; want failure mentioning %q", tc.args, err, stdout, stderr, tc.want)
			}
		})
	}
}

// TestAgainstAnExistingNATS runs bootstrap and serve with --nats-url on a
// separate nats-server listening on loopback.
func TestAgainstAnExistingNATS(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_NATS_URL=" + ns.ClientURL(), "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem")}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "first admin")
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, stderr)
	}
	p := serveProcess(t, dir, addr, env)
	req, _ := http.NewRequest("GET", p.url+"/v1/orgs/acme/keys", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(admin))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var page struct {
		Keys []struct{ Name, Masked string }
	}
	if err := json.NewDecoder(res.Body).Decode(&page); err != nil || res.StatusCode != http.StatusOK || len(page.Keys) != 1 {
		t.Fatalf("listing with the bootstrapped key: %d %+v %v", res.StatusCode, page, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("with --nats-url, serve must not create ./data: %v", err)
	}
}

func TestEnvironmentVariablesSetFlags(t *testing.T) {
	t.Setenv("KEYLEDGER_HTTP_ADDR", "127.0.0.1:9999")
	t.Setenv("KEYLEDGER_FSYNC", "false")
	f, err := parseServe([]string{"--data-dir", "/tmp/x"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.httpAddr != "127.0.0.1:9999" || f.fsync || f.dataDir != "/tmp/x" {
		t.Errorf("parsed %+v", f)
	}
	t.Setenv("KEYLEDGER_DATA_DIR", "/from/env")
	if f, _ := parseServe([]string{"--data-dir", "/tmp/x"}, io.Discard, io.Discard); f.dataDir != "/tmp/x" {
		t.Errorf("a flag must win over its variable: %q", f.dataDir)
	}
	t.Setenv("KEYLEDGER_FSYNC", "sometimes")
	if _, err := parseServe(nil, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "KEYLEDGER_FSYNC") {
		t.Errorf("a bad variable must be named in the error: %v", err)
	}
}

func TestVersionIsTheSameEverywhere(t *testing.T) {
	out, _, err := runBinary(t, t.TempDir(), nil, "version")
	version := strings.TrimSpace(out)
	if err != nil || version == "" {
		t.Fatalf("version: %q %v", out, err)
	}
	addr := freeAddr(t)
	p := serveProcess(t, t.TempDir(), addr, nil, "--http-addr", addr)
	res, err := http.Get(p.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct{ Status, Version string }
	err = json.NewDecoder(res.Body).Decode(&health)
	res.Body.Close()
	if err != nil || health.Version != version {
		t.Errorf("/healthz version = %q (%v), want %q", health.Version, err, version)
	}
	res, err = http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := `keyledger_build_info{goversion="`; !strings.Contains(string(metrics), want) || !strings.Contains(string(metrics), `version="`+version+`"`) {
		t.Errorf("/metrics has no keyledger_build_info naming %q", version)
	}
}

// TestNATSCredentialsArePassedThrough opens the embedded server's port
// with generated credentials, then points bootstrap at it with each seed.
func TestNATSCredentialsArePassedThrough(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	natsAddr := freeAddr(t)
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_DATA_DIR=" + dir + "/data", "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_NATS_LISTEN=" + natsAddr})
	log := p.stderr.String()
	service, subscriber := filepath.Join(dir, "data", "nats-service.nk"), filepath.Join(dir, "data", "nats-subscriber.nk")
	if !strings.Contains(log, service) || !strings.Contains(log, subscriber) {
		t.Errorf("the seed paths are not in the start-up log:\n%s", log)
	}
	url := "nats://" + natsAddr
	// The instance's own key: what it signs with, and trusts.
	signing := []string{"KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "data", "audit-signing-key.pem")}
	if _, stderr, err := runBinary(t, dir, signing, "bootstrap", "--nats-url", url, "--org", "acme", "--name", "x"); err == nil {
		t.Errorf("bootstrap without credentials succeeded: %s", stderr)
	}
	if _, stderr, err := runBinary(t, dir, signing, "bootstrap", "--nats-url", url, "--nats-creds", subscriber, "--org", "acme", "--name", "x"); err == nil {
		t.Errorf("bootstrap with the read-only credential succeeded: %s", stderr)
	}
	key, stderr, err := runBinary(t, dir, signing, "bootstrap", "--nats-url", url, "--nats-creds", service, "--org", "acme", "--name", "x")
	if err != nil {
		t.Fatalf("bootstrap with the service credential: %v\n%s", err, stderr)
	}
	out, stderr, err := runBinary(t, dir, signing, "audit", "export", "--org", "acme", "--nats-url", url, "--nats-creds", subscriber)
	if err != nil || strings.Count(out, "\n") != 1 || !strings.Contains(out, `"type":"KeyCreated"`) {
		t.Errorf("export with the read-only credential: %v\n%s%s", err, out, stderr)
	}
	req, _ := http.NewRequest("GET", p.url+"/v1/whoami?min_seq=1", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(key))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("the key bootstrapped over NATS: whoami %d", res.StatusCode)
	}
}

// TestBenchQuickRunsEveryScenario runs `keyledger bench --quick`, as CI
// must: every scenario runs without error; timings are not judged here.
func TestBenchQuickRunsEveryScenario(t *testing.T) {
	start := time.Now()
	out, stderr, err := runBinary(t, t.TempDir(), nil, "bench", "--quick")
	if err != nil {
		t.Fatalf("bench --quick: %v\n%s", err, stderr)
	}
	for _, scenario := range []string{"verify in-process", "verify over HTTP", "commands over HTTP", "on a 3-node cluster, R3", "raw writes in a burst", "revocation propagation", "edge verifier", "cold start", "verifier start", "memory", "usage flush", "usage rollup"} {
		if !strings.Contains(out, scenario) {
			t.Errorf("no %q row in:\n%s", scenario, out)
		}
	}
	t.Logf("bench --quick took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
}

// composeTool is the Compose command at hand: `docker compose` (v2,
// the README's) when the docker client has the plugin, else Debian's
// `docker-compose` (v1.29, which reads the same file); nil when neither.
// Neither needs a Docker engine to check a file.
func composeTool() []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	return nil
}

// TestComposeFileIsValid checks docker-compose.yml with Compose's own
// `config`; what it starts is run by TestComposeDeploymentOnRealServers.
func TestComposeFileIsValid(t *testing.T) {
	tool := composeTool()
	if tool == nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("neither docker compose nor docker-compose is installed under CI=true: .ci/run must install docker-compose")
		}
		t.Skip("neither docker compose nor docker-compose is installed (apt-get install docker-compose): the compose file is not checked")
	}
	config := func(env ...string) (string, error) {
		cmd := exec.Command(tool[0], append(tool[1:], "-f", "../../docker-compose.yml", "config")...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := config("KEYLEDGER_USER=1000:1000")
	if err != nil {
		t.Fatalf("%s config: %v\n%s", strings.Join(tool, " "), err, out)
	}
	for _, want := range []string{"nats-1:", "nats-2:", "nats-3:", "keyledger-init:", "keyledger-1:", "keyledger-2:",
		"KEYLEDGER_STREAM_REPLICAS: '3'", "image: nats:" + natsServerVersion(t) + "-alpine",
		"condition: service_healthy", "condition: service_completed_successfully", "/secrets:ro", "user: 1000:1000"} {
		if !strings.Contains(out, want) {
			t.Errorf("the effective compose file lacks %q:\n%s", want, out)
		}
	}
	// Without .env (step 1 of the README's "In production") it says what to do.
	if out, err := config("KEYLEDGER_USER="); err == nil || !strings.Contains(out, "write .env first") {
		t.Errorf("config without KEYLEDGER_USER: %v\n%s", err, out)
	}
}

func TestStreamReplicasNeedACluster(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bootstrap", "--org", "acme", "--name", "a", "--stream-replicas", "3"}, "needs a NATS cluster"},
		{[]string{"bootstrap", "--org", "acme", "--name", "a", "--stream-replicas", "2", "--nats-url", "nats://127.0.0.1:1"}, "must be 1, 3 or 5"},
	} {
		if _, stderr, err := runBinary(t, dir, nil, tc.args...); err == nil || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: %v %s", tc.args, err, stderr)
		}
	}
}
