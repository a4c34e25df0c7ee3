package main

import (
	"bytes"
	"crypto/rand"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigFile(t *testing.T) {
	files := map[string]string{
		"keyledger.yaml": `
http-addr: 127.0.0.1:7001
log-level: warn
fsync: false
cors-origins: [https://a.example, https://b.example]
command-timeout: 3s
max-in-flight: 64
snapshot_every: 5000
`,
		"keyledger.toml": `
http-addr = "127.0.0.1:7001"
log-level = "warn"
fsync = false
cors-origins = ["https://a.example", "https://b.example"]
command-timeout = "3s"
max-in-flight = 64
snapshot_every = 5000
`,
	}
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			path := writeFile(t, name, content)
			t.Run("SetsWhatNoFlagOrVariableSets", func(t *testing.T) {
				f, err := parseServe([]string{"--config", path}, io.Discard, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				if f.httpAddr != "127.0.0.1:7001" || f.logLevel != "warn" || f.fsync || f.commandTimeout != 3*time.Second ||
					f.maxInFlight != 64 || f.snapshotEvery != 5000 || f.corsOrigins != "https://a.example,https://b.example" {
					t.Errorf("parsed %+v", f)
				}
				if f.dataDir != "./data" {
					t.Errorf("a key the file does not hold keeps its default: data-dir = %q", f.dataDir)
				}
			})
			t.Run("FlagThenVariableThenFile", func(t *testing.T) {
				t.Setenv("KEYLEDGER_HTTP_ADDR", "127.0.0.1:7002")
				t.Setenv("KEYLEDGER_LOG_LEVEL", "error")
				f, err := parseServe([]string{"--config", path, "--log-level", "debug"}, io.Discard, io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := f.logLevel, "debug"; got != want {
					t.Errorf("log-level = %q, want the flag's %q", got, want)
				}
				if got, want := f.httpAddr, "127.0.0.1:7002"; got != want {
					t.Errorf("http-addr = %q, want the variable's %q", got, want)
				}
				if got, want := f.maxInFlight, 64; got != want {
					t.Errorf("max-in-flight = %d, want the file's %d", got, want)
				}
			})
			t.Run("ConfigFileFromTheEnvironment", func(t *testing.T) {
				t.Setenv("KEYLEDGER_CONFIG", path)
				f, err := parseServe(nil, io.Discard, io.Discard)
				if err != nil || f.httpAddr != "127.0.0.1:7001" {
					t.Errorf("KEYLEDGER_CONFIG: %+v %v", f, err)
				}
			})
		})
	}
}

func TestConfigFileRefusals(t *testing.T) {
	for _, c := range []struct {
		name, file, content, want string
	}{
		{"UnknownYAMLKey", "k.yaml", "http-addr: 127.0.0.1:1\nhttp-adr: 127.0.0.1:2\n", `unknown key "http-adr"`},
		{"UnknownTOMLKey", "k.toml", "verify-limit = 5\n", `unknown key "verify-limit"`},
		{"NestedSection", "k.toml", "[oidc]\nissuer = \"https://id.example\"\n", `unknown key "oidc"`},
		{"MapValue", "k.yaml", "http-addr: {host: 127.0.0.1}\n", `key "http-addr"`},
		{"SameFlagTwice", "k.yaml", "http-addr: 127.0.0.1:1\nhttp_addr: 127.0.0.1:2\n", "twice"},
		{"BadValue", "k.yaml", "max-in-flight: lots\n", "max-in-flight"},
		{"NotYAML", "k.yaml", "http-addr: [\n", "--config"},
		{"UnknownExtension", "k.json", `{"http-addr": "127.0.0.1:1"}`, ".yaml, .yml or .toml"},
		{"OnlyACommandLineFlag", "k.yaml", "print-config: true\n", `unknown key "print-config"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := writeFile(t, c.file, c.content)
			_, err := parseServe([]string{"--config", path}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one saying %q", err, c.want)
			}
		})
	}
	t.Run("MissingFile", func(t *testing.T) {
		if _, err := parseServe([]string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, io.Discard, io.Discard); err == nil {
			t.Error("a missing --config file must be an error")
		}
	})
}

func TestOtherCommandsTakeTheFlagsTheyShare(t *testing.T) {
	// bootstrap shares data-dir with serve but has no http-addr: the file
	// configures the service, and bootstrap reads what applies to it.
	path := writeFile(t, "k.yaml", "data-dir: /srv/keyledger\nhttp-addr: 127.0.0.1:7001\n")
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	var c common
	c.register(fs)
	if err := parse(fs, []string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	if got, want := c.dataDir, "/srv/keyledger"; got != want {
		t.Errorf("data-dir = %q, want %q", got, want)
	}
}

func TestPrintConfig(t *testing.T) {
	path := writeFile(t, "k.yaml", "http-addr: 127.0.0.1:7001\nnats-url: nats://svc:hunter2@10.0.0.1:4222,nats://s3cr3tt0ken@10.0.0.2:4222\n")
	t.Setenv("KEYLEDGER_LOG_LEVEL", "warn")
	var out bytes.Buffer
	f, err := parseServe([]string{"--config", path, "--print-config", "--max-in-flight", "64"}, &out, io.Discard)
	if err != nil || !f.printConfig {
		t.Fatalf("--print-config: %v", err)
	}
	text := out.String()
	for _, want := range []string{
		"http-addr: 127.0.0.1:7001  # config file",
		"log-level: warn  # environment",
		"max-in-flight: \"64\"  # flag",
		"data-dir: ./data  # default",
		"nats://svc:****@10.0.0.1:4222,nats://****@10.0.0.2:4222",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, text)
		}
	}
	for _, secret := range []string{"hunter2", "s3cr3tt0ken"} {
		if strings.Contains(text, secret) {
			t.Errorf("--print-config shows the secret %q:\n%s", secret, text)
		}
	}

	t.Run("ItsOutputIsAConfigFile", func(t *testing.T) {
		var first bytes.Buffer
		if _, err := parseServe([]string{"--print-config", "--http-addr", "127.0.0.1:7003", "--cors-origins", "https://a.example"}, &first, io.Discard); err != nil {
			t.Fatal(err)
		}
		again := writeFile(t, "printed.yaml", first.String())
		g, err := parseServe([]string{"--config", again}, io.Discard, io.Discard)
		if err != nil {
			t.Fatalf("the printed configuration does not read back: %v\n%s", err, first.String())
		}
		if g.httpAddr != "127.0.0.1:7003" || g.corsOrigins != "https://a.example" || g.logLevel != "warn" {
			t.Errorf("read back %+v", g)
		}
	})

	t.Run("TheBinaryPrintsAndExits", func(t *testing.T) {
		out, stderr, err := runBinary(t, t.TempDir(), []string{"KEYLEDGER_NATS_URL=nats://svc:hunter2@127.0.0.1:1"}, "serve", "--print-config")
		if err != nil || !strings.Contains(out, "nats-url: nats://svc:****@127.0.0.1:1  # environment") || strings.Contains(out+stderr, "hunter2") {
			t.Errorf("serve --print-config: %v\n%s%s", err, out, stderr)
		}
	})
}

func TestMaskSecret(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":             "nats://127.0.0.1:4222",
		"nats://u:p@h:4222":                 "nats://u:****@h:4222",
		"tls://tok@h:4222":                  "tls://****@h:4222",
		"nats://a:b@h1:1, nats://h2:2":      "nats://a:****@h1:1, nats://h2:2",
		"admin@example.com":                 "admin@example.com",
		"https://id.example/realms/a@b?x=1": "https://****@b?x=1",    // a path's "@" is masked too: better too much than a leak
		"nats://user:p%zz@host":             "nats://user:****@host", // not a URL Go can parse
		"nats://user:pa/ss@host":            "nats://user:****@host",
	} {
		if got := maskSecret(in); got != want {
			t.Errorf("maskSecret(%q) = %q, want %q", in, got, want)
		}
	}
	key, err := domain.GenerateSecret("c8k", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := maskSecret(key), domain.MaskSecret(key); got != want {
		t.Errorf("a key is shown masked: got %q, want %q", got, want)
	}
}
