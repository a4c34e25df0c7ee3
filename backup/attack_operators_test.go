package backup_test

import (
	"archive/tar"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/backup"
)

// TestAttackManySmallEntriesDoNotFillMemory: Open keeps every entry outside
// streams/ in memory until the manifest says which it needs (the manifest
// and the keys), each at most 1 MiB, but any number of them: a file of a
// thousand such entries held a gigabyte before it was found damaged.
func TestAttackManySmallEntriesDoNotFillMemory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "forged.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	chunk := []byte(strings.Repeat("k", 1<<20))
	const entries = 64
	for i := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("keys/%d", i), Size: int64(len(chunk)), Mode: 0o600, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = backup.Open(path)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, backup.ErrDamaged) {
		t.Fatalf("Open of %d entries of 1 MiB: %v, want damaged", entries, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("Open of %d MiB of small entries allocated %d MiB before it refused the file", entries, grew>>20)
	}
}
