package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// nonLoopback returns an address of this machine that is not loopback.
func nonLoopback(t *testing.T) string {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			return ip.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address")
	return ""
}

// TestAttackScanReportsOverPlainHTTP: keyledger scan --report
// http://<not loopback> sends the reporting key (Authorization: Bearer)
// and every leaked secret found in clear over the network; serve refuses
// an http public URL off loopback, scan should refuse to report there.
func TestAttackScanReportsOverPlainHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", nonLoopback(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Value
	seen.Store("")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"label":"false_positive"}`))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	reporter, _ := domain.GenerateSecret("c8k", nil)
	leaked, _ := domain.GenerateSecret("c8k", nil)
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, ".env"), []byte("API_KEY="+leaked+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, _ := runBinary(t, tree, nil, "scan", "--report", "http://"+ln.Addr().String(), "--report-token", reporter, ".")
	if got := seen.Load().(string); strings.Contains(got, reporter) {
		t.Errorf("scan --report http://%s sent the reporting key in clear (Authorization: %s…) and the secrets found; stderr: %s", ln.Addr(), got[:16], strings.TrimSpace(stderr))
	}
	if strings.Contains(out+stderr, reporter) || strings.Contains(out+stderr, leaked) {
		t.Error("scan printed a key")
	}
}

// TestAttackScanSymlinkLoopAndSpecialFiles: a symlink loop, a symlink to
// /dev/zero, and a FIFO in the tree neither hang nor crash the scan, and
// the key beside them is still found.
func TestAttackScanSymlinkLoopAndSpecialFiles(t *testing.T) {
	tree := t.TempDir()
	leaked, _ := domain.GenerateSecret("c8k", nil)
	_ = os.WriteFile(filepath.Join(tree, "a.txt"), []byte(leaked+"\n"), 0o644)
	_ = os.Symlink(tree, filepath.Join(tree, "loop"))
	_ = os.Symlink("/dev/zero", filepath.Join(tree, "zero"))
	_ = os.Symlink("/proc/self/mem", filepath.Join(tree, "mem"))
	if err := mkfifo(filepath.Join(tree, "fifo")); err != nil {
		t.Log(err)
	}
	out, stderr, err := runBinary(t, tree, nil, "scan", ".")
	if err == nil || !strings.Contains(out, domain.MaskSecret(leaked)) || strings.Contains(stderr, "scan: ") && !strings.Contains(stderr, "keys found") {
		t.Errorf("scan: %v\n%s\n%s", err, out, stderr)
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }
