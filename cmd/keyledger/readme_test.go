package main

import (
	"bytes"
	"encoding/json"
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
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_LOG_LEVEL=debug"})

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

	p.stop(t)
	secrets := append(keyShaped.FindAllString(out, -1), admin)
	checkServeLogs(t, p.stderr.String(), secrets)
}

var keyShaped = regexp.MustCompile(`[a-z0-9]+_[0-9A-Za-z]{49}`)

// checkServeLogs reads serve's log (JSON, debug level): it holds no secret
// and nothing shaped like a key; every line logged during a request names
// the request, and each request has one access line.
func checkServeLogs(t *testing.T, log string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the log holds the secret %s…", s[:8])
		}
	}
	if m := keyShaped.FindString(log); m != "" {
		t.Errorf("the log holds something shaped like a key: %s…", m[:8])
	}
	access := map[string]int{}
	var others []map[string]any
	lines := strings.Split(strings.TrimSpace(log), "\n")
	for _, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("a log line is not JSON: %v: %s", err, line)
			continue
		}
		id, _ := rec["request_id"].(string)
		switch {
		case rec["msg"] == "request":
			if id == "" {
				t.Errorf("an access line has no request id: %s", line)
			}
			access[id]++
		case id != "":
			others = append(others, rec)
		case rec["method"] != nil || rec["path"] != nil || rec["route"] != nil:
			t.Errorf("a line about a request has no request id: %s", line)
		}
	}
	for id, n := range access {
		if n != 1 {
			t.Errorf("request %s has %d access lines, want 1", id, n)
		}
	}
	for _, rec := range others {
		if id := rec["request_id"].(string); access[id] == 0 {
			t.Errorf("a line names request %s, which has no access line: %v", id, rec)
		}
	}
	if len(access) < 10 {
		t.Errorf("the walk-through logged %d requests; it makes more than 10", len(access))
	}
	t.Logf("%d log lines, %d requests, %d other lines of requests", len(lines), len(access), len(others))
}
