package main

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// readmeBlock returns the fenced block that follows <!-- walkthrough:name -->.
func readmeBlock(t *testing.T, readme, name string) string {
	t.Helper()
	marker := "<!-- walkthrough:" + name + " -->"
	_, rest, ok := strings.Cut(readme, marker)
	if !ok {
		t.Fatalf("README has no %s", marker)
	}
	_, rest, _ = strings.Cut(rest, "```sh\n")
	block, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatalf("README block %s is not closed", name)
	}
	return block
}

// needTools skips when a tool the walk-through uses is missing, except under
// CI=true, where .ci/run has installed them.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing; .ci/run must install it", tool)
			}
			t.Skipf("%s is not installed; the README walk-through needs it (apt-get install %s)", tool, tool)
		}
	}
}

// TestReadmeWalkthrough runs the README's walk-through as written, with the
// built binary for `go run ./cmd/keyledger` and a free port for 8080.
func TestReadmeWalkthrough(t *testing.T) {
	needTools(t, "bash", "curl", "jq")
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	addr := freeAddr(t)
	adapt := strings.NewReplacer("go run ./cmd/keyledger", binary, "localhost:8080", addr).Replace
	dir := t.TempDir()

	bash := func(script string, env ...string) string {
		t.Helper()
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", err, script, out.String(), errOut.String())
		}
		return out.String()
	}

	admin := strings.TrimSpace(bash(adapt(readmeBlock(t, readme, "bootstrap")) + "\necho \"$ADMIN\"\n"))
	if !regexp.MustCompile(`^c8k_[0-9A-Za-z]{49}$`).MatchString(admin) {
		t.Fatalf("bootstrap printed %q, want one key", admin)
	}

	if got := strings.TrimSpace(readmeBlock(t, readme, "serve")); got != "go run ./cmd/keyledger serve" {
		t.Fatalf("the serve block is %q; this test starts exactly `serve` with no flags", got)
	}
	serveProcess(t, dir, addr, []string{"KEYLEDGER_HTTP_ADDR=" + addr})

	out := bash(adapt(readmeBlock(t, readme, "steps")), "ADMIN="+admin)
	t.Logf("walk-through output:\n%s", out)
	want := []string{
		`"masked":"c8k_****`, `"status":"active"`, // listing
		`"valid":true,"code":"VALID"`,                                  // verify
		`"name":"billing worker","status":"active"`,                    // whoami
		`"valid":false,"code":"EXPIRED"`,                               // old value after rotation
		`"valid":true,"code":"VALID"`,                                  // new value
		`"valid":true,"code":"VALID","deprecated":true,"expires_at":"`, // in its grace period
		`"last_used_at":"`,
		"204",                            // revoke
		`"valid":false,"code":"REVOKED"`, // after revocation, both values
		`"valid":false,"code":"REVOKED"`,
		`"type":"KeyCreated","by":"first admin"`,
		`"type":"KeyRotated","by":"first admin"`,
		`"type":"KeyRotated","by":"first admin"`,
		`"type":"KeyRevoked","by":"first admin"`,
	}
	rest := out
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("walk-through output lacks %s (in order)", w)
		}
		rest = rest[i+len(w):]
	}
	if strings.Contains(out, admin) {
		t.Error("the walk-through printed the admin key")
	}
}
