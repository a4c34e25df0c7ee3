package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/internal/oidctest"
)

// TestLoginWithTheDeviceGrant: against a server whose managers sign in
// with SSO, keyledger login --sso runs the OAuth 2.0 device authorization
// grant with a real OpenID Provider (zitadel/oidc's example, through its
// own device pages, as a person would in a browser elsewhere); the ID
// token it gets manages the org (by the group keyledger-acme-managers),
// and keys list works with the profile alone.
func TestLoginWithTheDeviceGrant(t *testing.T) {
	p := oidctest.Start(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_OIDC_ISSUER=" + p.URL(), "KEYLEDGER_OIDC_AUDIENCE=keyledger",
		"KEYLEDGER_OIDC_CLI_CLIENT_ID=" + oidctest.CLIClientID, "KEYLEDGER_OIDC_MANAGER_GROUP=keyledger-{org}-managers"}
	if _, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "admin"); err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	srv := serveProcess(t, dir, addr, env)
	config := t.TempDir()
	cliEnv := append(os.Environ(), "XDG_CONFIG_HOME="+config, "HOME="+config, "KEYLEDGER_TOKEN=", "KEYLEDGER_SERVER=", "KEYLEDGER_ORG=")

	login := exec.Command(binary, "login", "--sso", "--server", srv.url, "--org", "acme")
	login.Dir, login.Env = dir, cliEnv
	stderr, _ := login.StderrPipe()
	if err := login.Start(); err != nil {
		t.Fatal(err)
	}
	var said bytes.Buffer
	lines := bufio.NewReader(io.TeeReader(stderr, &said))
	line, err := lines.ReadString('\n')
	m := regexp.MustCompile(`open (\S+) and enter the code (\S+)`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("keyledger login --sso said %q (%v)", line, err)
	}
	// The person, in a browser: the provider's device pages.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	res, err := browser.PostForm(p.URL()+"/device/login", url.Values{"user_code": {m[2]}, "username": {"test-user@127.0.0.1"}, "password": {oidctest.Password}})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the provider's device login: %v %v", res, err)
	}
	res.Body.Close()
	res, err = browser.PostForm(p.URL()+"/device/confirm", url.Values{"action": {"allowed"}})
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("the provider's device confirmation: %v %v", res, err)
	}
	res.Body.Close()
	done := make(chan error, 1)
	go func() { _, _ = io.Copy(io.Discard, lines); done <- login.Wait() }()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(said.String(), "signed in to") {
			t.Fatalf("keyledger login --sso: %v\n%s", err, said.String())
		}
	case <-time.After(30 * time.Second):
		_ = login.Process.Kill()
		t.Fatalf("keyledger login --sso did not finish:\n%s", said.String())
	}

	list := exec.Command(binary, "keys", "list")
	list.Dir, list.Env = dir, cliEnv
	out, err := list.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "admin") {
		t.Errorf("keys list with the SSO profile: %v\n%s", err, out)
	}
	create := exec.Command(binary, "keys", "create", "--name", "made by a person")
	create.Dir, create.Env = dir, cliEnv
	var createErr bytes.Buffer
	create.Stderr = &createErr
	key, err := create.Output()
	if err != nil || !strings.HasPrefix(string(key), "c8k_") {
		t.Fatalf("keys create with the SSO profile: %v %s", err, createErr.String())
	}
	hist := exec.Command(binary, "keys", "list", "--output", "json")
	hist.Dir, hist.Env = dir, cliEnv
	out, _ = hist.Output()
	if !strings.Contains(string(out), `"created_by":{"id":"id1","kind":"user","name":"test-user@zitadel.ch"}`) && !strings.Contains(string(out), `"test-user@zitadel.ch"`) {
		t.Errorf("the key is not the person's: %s", out)
	}
}
