package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

func exitCode(err error) int {
	var e *exec.ExitError
	if errors.As(err, &e) {
		return e.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestKeysFromTheTerminal drives keyledger keys, verify and whoami against
// a running serve, as a pipeline would: a new key comes alone on stdout
// (KEY=$(keyledger keys create …)), everything else on stderr; tables are
// aligned; JSON is the server's own; exit codes say what happened (0 ok,
// 1 failed, 2 usage, 3 not found, 4 forbidden or unauthenticated).
func TestKeysFromTheTerminal(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	admin, stderr, err := runBinary(t, dir, []string{"KEYLEDGER_HTTP_ADDR=" + addr}, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_HTTP_ADDR=" + addr})
	env := []string{"KEYLEDGER_SERVER=" + p.url, "KEYLEDGER_ORG=acme", "KEYLEDGER_TOKEN=" + strings.TrimSpace(admin)}
	cli := func(args ...string) (string, string, int) {
		t.Helper()
		out, errOut, err := runBinary(t, dir, env, args...)
		return out, errOut, exitCode(err)
	}

	key, errOut, code := cli("keys", "create", "--name", "billing worker", "--expires-in", "90d")
	key = strings.TrimSuffix(key, "\n")
	if code != 0 || !domain.WellFormed(key) || strings.Contains(key, "\n") {
		t.Fatalf("keys create: exit %d, stdout %q, stderr %s; want the key alone on stdout", code, key, errOut)
	}
	if !strings.Contains(errOut, "billing worker") || strings.Contains(errOut, key) {
		t.Errorf("keys create's stderr: %s", errOut)
	}
	out, _, code := cli("keys", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || strings.Index(lines[1], "c8k_****") != strings.Index(lines[0], "KEY") {
		t.Errorf("keys list (a table, aligned):\n%s", out)
	}
	out, _, _ = cli("keys", "list", "--output", "json")
	var listed struct {
		Keys []struct {
			ID, Name, Masked, Status string
		}
	}
	if err := json.Unmarshal([]byte(out), &listed); err != nil || len(listed.Keys) != 2 {
		t.Fatalf("keys list --output json: %v\n%s", err, out)
	}
	var id string
	for _, k := range listed.Keys {
		if k.Name == "billing worker" {
			id = k.ID
		}
	}
	if out, _, code := cli("keys", "get", id, "--output", "yaml"); code != 0 || !strings.Contains(out, "name: billing worker") {
		t.Errorf("keys get --output yaml: %d\n%s", code, out)
	}
	if out, _, code := cli("verify", key); code != 0 || !strings.Contains(out, "VALID") {
		t.Errorf("verify a valid key: %d %s", code, out)
	}
	rotated, _, code := cli("keys", "rotate", id, "--grace", "1h")
	rotated = strings.TrimSpace(rotated)
	if code != 0 || !domain.WellFormed(rotated) || rotated == key {
		t.Fatalf("keys rotate: %d %q", code, rotated)
	}
	if out, _, code := cli("verify", key); code != 0 || !strings.Contains(out, "deprecated") {
		t.Errorf("the replaced value in its grace period: %d %s", code, out)
	}
	if _, errOut, code := cli("keys", "revoke", id, "--reason", "left the team"); code != 0 || !strings.Contains(errOut, "revoked") {
		t.Errorf("keys revoke: %d %s", code, errOut)
	}
	if out, _, code := cli("verify", rotated); code != 1 || !strings.Contains(out, "REVOKED") {
		t.Errorf("verify a revoked key: exit %d %s, want 1", code, out)
	}
	out, _, code = cli("keys", "history", id)
	if code != 0 || !strings.Contains(out, "KeyCreated") || !strings.Contains(out, "KeyRotated") || !strings.Contains(out, "KeyRevoked") {
		t.Errorf("keys history: %d\n%s", code, out)
	}
	env2 := append(env[:2:2], "KEYLEDGER_TOKEN="+rotated)
	if _, _, code := runBinaryCode(t, dir, env2, "keys", "list"); code != 4 {
		t.Errorf("a revoked credential: exit %d, want 4", code)
	}
	if _, _, code := cli("keys", "get", "key_"+strings.Repeat("0", 26)); code != 3 {
		t.Errorf("an unknown key: exit %d, want 3", code)
	}
	if _, _, code := cli("keys", "create"); code != 2 {
		t.Errorf("create without --name: exit %d, want 2", code)
	}
	if _, _, code := cli("keys", "list", "--output", "xml"); code != 2 {
		t.Errorf("an unknown output: exit %d, want 2", code)
	}
	if out, _, code := cli("whoami"); code != 0 || !strings.Contains(out, "admin") {
		t.Errorf("whoami: %d %s", code, out)
	}
	// Every reading subcommand in every output format.
	for _, args := range [][]string{{"keys", "list", "--all"}, {"keys", "get", id}, {"keys", "history", id}, {"whoami"}, {"verify", key}} {
		for _, format := range []string{"table", "json", "yaml"} {
			out, errOut, code := cli(append(args, "--output", format)...)
			if args[0] == "verify" {
				code-- // a revoked key: exit 1
			}
			ok := code == 0 && out != ""
			switch format {
			case "json":
				ok = ok && json.Valid([]byte(out))
			case "yaml":
				ok = ok && !strings.HasPrefix(out, "{") && strings.Contains(out, ": ")
			}
			if !ok {
				t.Errorf("%v --output %s: exit %d\n%s%s", args, format, code, out, errOut)
			}
		}
	}
	// The writing subcommands in the other formats: the whole answer on
	// stdout, key included.
	out, _, code = cli("keys", "create", "--name", "as json", "--output", "json")
	var made struct {
		Key    struct{ ID string }
		Secret string
	}
	if err := json.Unmarshal([]byte(out), &made); code != 0 || err != nil || !domain.WellFormed(made.Secret) {
		t.Fatalf("keys create --output json: %d %v\n%s", code, err, out)
	}
	if out, _, code := cli("keys", "rotate", made.Key.ID, "--output", "yaml"); code != 0 || !strings.Contains(out, "secret: c8k_") {
		t.Errorf("keys rotate --output yaml: %d\n%s", code, out)
	}
	if _, errOut, code := cli("keys", "revoke", made.Key.ID, "--output", "json"); code != 0 || !strings.Contains(errOut, "revoked") {
		t.Errorf("keys revoke --output json: %d %s", code, errOut)
	}
	// Failures: another org, a server that is down.
	if _, errOut, code := cli("keys", "list", "--org", "globex"); code != 4 || !strings.Contains(errOut, "forbidden") {
		t.Errorf("another org: exit %d %s, want 4", code, errOut)
	}
	down := "http://" + freeAddr(t)
	if _, errOut, code := cli("keys", "list", "--server", down); code != 1 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("a server that is down: exit %d %s, want 1", code, errOut)
	}
}

func runBinaryCode(t *testing.T, dir string, env []string, args ...string) (string, string, int) {
	t.Helper()
	out, errOut, err := runBinary(t, dir, env, args...)
	return out, errOut, exitCode(err)
}

// TestLoginKeepsACredentialInAProfile: keyledger login reads a key from
// standard input (without echo on a terminal), checks it with the server
// and keeps it in the user's config directory, mode 0600, under a named
// profile whose server and org become the defaults; the credential goes
// only to the server it was given for; KEYLEDGER_TOKEN wins over it;
// logout forgets it. A key the server refuses is not kept.
func TestLoginKeepsACredentialInAProfile(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	admin, stderr, err := runBinary(t, dir, []string{"KEYLEDGER_HTTP_ADDR=" + addr}, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_HTTP_ADDR=" + addr})
	config := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + config, "HOME=" + config, "KEYLEDGER_TOKEN=", "KEYLEDGER_SERVER=", "KEYLEDGER_ORG="}
	withStdin := func(stdin string, args ...string) (string, string, int) {
		t.Helper()
		cmd := exec.Command(binary, args...)
		cmd.Dir, cmd.Env, cmd.Stdin = dir, append(os.Environ(), env...), strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String(), errOut.String(), exitCode(err)
	}
	if _, errOut, code := withStdin("c8k_notakey\n", "login", "--server", p.url, "--profile", "work"); code != 4 {
		t.Errorf("login with a refused key: exit %d %s, want 4", code, errOut)
	}
	if _, errOut, code := withStdin(admin+"\n", "login", "--server", p.url, "--profile", "work"); code != 0 || strings.Contains(errOut, admin) {
		t.Fatalf("login: exit %d %s", code, errOut)
	}
	path := filepath.Join(config, "keyledger", "profiles.json")
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the profiles file: %v %v, want mode 0600", info, err)
	}
	if out, errOut, code := withStdin("", "keys", "list", "--profile", "work"); code != 0 || !strings.Contains(out, "admin") {
		t.Errorf("keys list with the profile (its server, org and key): %d %s %s", code, out, errOut)
	}
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the profile's key was sent to another server")
		}
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer other.Close()
	if _, _, code := withStdin("", "keys", "list", "--profile", "work", "--server", other.URL); code != 4 {
		t.Errorf("another server: exit %d, want 4", code)
	}
	if _, errOut, code := withStdin("", "logout", "--profile", "work"); code != 0 {
		t.Errorf("logout: %d %s", code, errOut)
	}
	if _, _, code := withStdin("", "keys", "list", "--profile", "work", "--server", p.url, "--org", "acme"); code != 4 {
		t.Errorf("after logout: exit %d, want 4", code)
	}
	if raw, _ := os.ReadFile(path); strings.Contains(string(raw), admin) {
		t.Error("the key is still in the profiles file after logout")
	}
	if _, _, code := withStdin("", "logout", "--profile", "work"); code != 3 {
		t.Errorf("logout of no profile: exit %d, want 3", code)
	}
}

// TestShellCompletion sources `keyledger completion bash` in a real bash
// and asks it what it would complete: subcommands, output formats, and
// the key ids of the org, fetched from the running server. The zsh and
// fish scripts are checked by their shells when those are installed.
func TestShellCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	admin, stderr, err := runBinary(t, dir, []string{"KEYLEDGER_HTTP_ADDR=" + addr}, "bootstrap", "--org", "acme", "--name", "admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_HTTP_ADDR=" + addr})
	bin := t.TempDir()
	if err := os.Symlink(binary, filepath.Join(bin, "keyledger")); err != nil {
		t.Fatal(err)
	}
	env := []string{"PATH=" + bin + ":" + os.Getenv("PATH"), "KEYLEDGER_SERVER=" + p.url, "KEYLEDGER_ORG=acme", "KEYLEDGER_TOKEN=" + strings.TrimSpace(admin), "XDG_CONFIG_HOME=" + t.TempDir()}
	ids, _, _ := runBinary(t, dir, env, "keys", "list", "--output", "json")
	complete := func(words ...string) []string {
		t.Helper()
		script := `source <(keyledger completion bash); COMP_WORDS=(` + strings.Join(words, " ") + `); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _keyledger; printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "-c", script)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Fields(string(out))
	}
	if got := complete("keyledger", "ke"); strings.Join(got, " ") != "keygen keys" {
		t.Errorf("keyledger ke<TAB>: %v", got)
	}
	if got := complete("keyledger", "keys", "ro"); strings.Join(got, " ") != "rotate" {
		t.Errorf("keyledger keys ro<TAB>: %v", got)
	}
	if got := complete("keyledger", "keys", "list", "--output", "y"); strings.Join(got, " ") != "yaml" {
		t.Errorf("--output y<TAB>: %v", got)
	}
	if got := complete("keyledger", "keys", "list", "--org", `""`); strings.Join(got, " ") != "acme" {
		t.Errorf("--org <TAB>: %v, want the org of the credential, from the server", got)
	}
	got := complete("keyledger", "keys", "rotate", "key_")
	if len(got) != 1 || !strings.Contains(ids, got[0]) || !strings.HasPrefix(got[0], "key_") {
		t.Errorf("keyledger keys rotate key_<TAB>: %v (the org's keys: %s)", got, ids)
	}
	for shell, check := range map[string][]string{"zsh": {"-n"}, "fish": {"--no-execute"}} {
		path, err := exec.LookPath(shell)
		if err != nil {
			continue
		}
		script, _, _ := runBinary(t, dir, env, "completion", shell)
		cmd := exec.Command(path, check...)
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("the %s script: %v %s", shell, err, out)
		}
	}
}
