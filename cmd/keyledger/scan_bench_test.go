package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkScan measures keyledger scan over a generated tree of 2,000
// source-like files (100 MB: identifiers with underscores, as Go, Python
// and .env files have many, which is where the scanner looks), beside the
// bare work it cannot avoid in the same run: walking the tree and reading
// every file. Both report MB/s.
//
//	go test -run '^$' -bench Scan -benchtime 5x ./cmd/keyledger/
func BenchmarkScan(b *testing.B) {
	dir := b.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	words := []string{"func", "user_id", "return", "api_key", "if", "err", "nil", "self.key_prefix", "MAX_RETRIES", "=", "{", "}", "ctx", "os.getenv(\"API_TOKEN\")", "snake_case_name", "x"}
	var total int64
	for i := range 2000 {
		var sb strings.Builder
		for sb.Len() < 50_000 {
			for range 12 {
				sb.WriteString(words[rng.IntN(len(words))])
				sb.WriteByte(' ')
			}
			sb.WriteByte('\n')
		}
		path := filepath.Join(dir, fmt.Sprintf("pkg%02d", i%40), fmt.Sprintf("file%04d.go", i))
		_ = os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			b.Fatal(err)
		}
		total += int64(sb.Len())
	}
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			if err := scan(context.Background(), []string{"--quiet", dir}, io.Discard, io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-walk-and-read", func(b *testing.B) {
		b.SetBytes(total)
		for b.Loop() {
			_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() {
					_, err = os.ReadFile(path)
				}
				return err
			})
		}
	})
}
