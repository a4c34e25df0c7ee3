package main

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAuditCommands runs a server that signs checkpoints every second,
// stops it, and audits its data directory with the CLI.
func TestAuditCommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addr := freeAddr(t)
	env := []string{"KEYLEDGER_DATA_DIR=" + data, "KEYLEDGER_HTTP_ADDR=" + addr}
	admin, stderr, err := runBinary(t, dir, env, "bootstrap", "--org", "acme", "--name", "auditor's admin")
	if err != nil {
		t.Fatalf("bootstrap: %v %s", err, stderr)
	}
	admin = strings.TrimSpace(admin)
	p := serveProcess(t, dir, addr, env, "--checkpoint-interval", "1s")
	for _, name := range []string{"one", "two", "three"} {
		req, _ := http.NewRequest("POST", p.url+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"`+name+`"}`))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusCreated {
			t.Fatalf("create: %v %v", res, err)
		}
		res.Body.Close()
	}
	mid := time.Now().UTC()
	time.Sleep(1500 * time.Millisecond) // one checkpoint interval and a half
	res, err := http.Get(p.url + "/v1/audit/pubkey")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("pubkey over HTTP: %v %v", res, err)
	}
	res.Body.Close()
	p.stop(t)

	t.Run("VerifyIsIntact", func(t *testing.T) {
		out, stderr, err := runBinary(t, dir, env, "audit", "verify")
		if err != nil || !strings.HasPrefix(out, "intact up to sequence") || strings.Contains(out, "0 checkpoints") {
			t.Errorf("verify: %v\n%s%s", err, out, stderr)
		}
	})
	t.Run("VerifyWithAnotherKeyFails", func(t *testing.T) {
		other := filepath.Join(dir, "other.pem")
		if _, err := events.LoadOrCreateSigningKey(filepath.Join(dir, "other-signing.pem")); err != nil {
			t.Fatal(err)
		}
		pem, _, err := runBinary(t, dir, env, "audit", "pubkey", "--audit-key", filepath.Join(dir, "other-signing.pem"))
		if err != nil {
			t.Fatal(err)
		}
		_ = os.WriteFile(other, []byte(pem), 0o644)
		out, _, err := runBinary(t, dir, env, "audit", "verify", "--pubkey", other)
		if err == nil || !strings.Contains(out, "NOT INTACT") || !strings.Contains(out, "FORGED at sequence 1") {
			t.Errorf("verify with a stranger's key: %v %s", err, out)
		}
	})
	t.Run("ExportJSONLines", func(t *testing.T) {
		out, stderr, err := runBinary(t, dir, env, "audit", "export", "--org", "acme")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if err != nil || len(lines) != 4 {
			t.Fatalf("export: %v, %d lines\n%s%s", err, len(lines), out, stderr)
		}
		var e struct {
			Type string
			Seq  uint64
		}
		if err := json.Unmarshal([]byte(lines[3]), &e); err != nil || e.Type != "KeyCreated" || e.Seq == 0 {
			t.Errorf("last line %s: %v", lines[3], err)
		}
		if strings.Contains(out, admin) {
			t.Error("the export holds a secret")
		}
	})
	t.Run("ExportCSVSince", func(t *testing.T) {
		out, _, err := runBinary(t, dir, env, "audit", "export", "--org", "acme", "--format", "csv", "--until", mid.Format(time.RFC3339Nano))
		rows, cerr := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil || cerr != nil || len(rows) != 5 || strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") || rows[1][2] != "KeyCreated" {
			t.Errorf("csv: %v %v %q", err, cerr, rows)
		}
	})
	t.Run("AsOf", func(t *testing.T) {
		out, _, err := runBinary(t, dir, env, "audit", "as-of", "--org", "acme", "--at", mid.Format(time.RFC3339Nano))
		if err != nil || strings.Count(out, "key_") != 4 || !strings.Contains(out, "c8k_****") || !strings.Contains(out, "auditor's admin") {
			t.Errorf("as-of: %v\n%s", err, out)
		}
		out, _, _ = runBinary(t, dir, env, "audit", "as-of", "--org", "acme", "--at", "2020-01-01T00:00:00Z")
		if strings.Contains(out, "key_") {
			t.Errorf("as-of before anything: %s", out)
		}
	})
	t.Run("BadFlags", func(t *testing.T) {
		for _, args := range [][]string{{"audit", "export"}, {"audit", "export", "--org", "acme", "--format", "xml"}, {"audit", "as-of", "--org", "acme"}, {"audit", "rewrite"}} {
			if _, _, err := runBinary(t, dir, env, args...); err == nil {
				t.Errorf("%v succeeded", args)
			}
		}
	})
}

// BenchmarkExportPeakRSS exports 10,000 and 100,000 events with the real
// binary and reports the process's peak resident memory. "remote" reads a
// running NATS with the read-only credential, so the figure is the export's
// own: flat, since it streams batch by batch. "embedded" opens the data
// directory itself, so the nats-server's own index of the stream (which
// grows with the number of subjects) is counted too.
//
//	go test -run '^$' -bench ExportPeakRSS -benchtime 1x ./cmd/keyledger/
func BenchmarkExportPeakRSS(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		dir := b.TempDir()
		env := natstest.StartListeningIn(b, dir)
		fill(b, env, n)
		signers := filepath.Join(b.TempDir(), "signers.pem")
		if err := os.WriteFile(signers, env.Signers.PEM(), 0o644); err != nil {
			b.Fatal(err)
		}
		remote := []string{"--nats-url", env.Embedded.ClientURL(), "--nats-creds", env.Embedded.Credentials.Subscriber, "--event-signers", signers}
		b.Run(fmt.Sprintf("remote/%dk-events", n/1000), func(b *testing.B) { exportRSS(b, n, remote) })
		env.Stop()
		b.Run(fmt.Sprintf("embedded/%dk-events", n/1000), func(b *testing.B) {
			exportRSS(b, n, []string{"--data-dir", dir, "--event-signers", signers})
		})
	}
}

func exportRSS(b *testing.B, n int, args []string) {
	for range b.N {
		cmd := exec.Command(binary, append([]string{"audit", "export", "--org", "acme"}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr // stdout goes to /dev/null
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		// Not the rusage of wait4: Linux counts in a child's ru_maxrss the
		// parent's resident set at the exec, and this parent holds the data.
		peak, exited := make(chan int64), make(chan struct{})
		go func() {
			var hwm int64
			for {
				if kb := vmHWM(cmd.Process.Pid); kb > hwm {
					hwm = kb
				}
				select {
				case <-exited:
					peak <- hwm
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		err := cmd.Wait()
		close(exited)
		if err != nil {
			b.Fatalf("export: %v %s", err, stderr.String())
		}
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
		b.ReportMetric(float64(<-peak)/1024, "peak-RSS-MiB")
	}
}

// vmHWM reads a live process's peak resident set, in KiB.
func vmHWM(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
			return kb
		}
	}
	return 0
}

// fill publishes n creations straight to the stream, as fast as it takes.
func fill(b *testing.B, env *natstest.Env, n int) {
	b.Helper()
	secret, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
	for i := range n {
		e, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "bulk", By: domain.SystemPrincipal("", "")}, time.Now(), 0, secret)
		body, _ := events.Encode(e)
		if _, err := env.JS.PublishAsync(events.Subject(e.OrgID, e.KeyID, e.Type), body); err != nil {
			b.Fatal(err)
		}
		if i%5000 == 4999 || i == n-1 {
			select {
			case <-env.JS.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishing took over a minute")
			}
		}
	}
}
