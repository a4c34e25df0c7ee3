package projections_test

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/projections"
)

// BenchmarkVerifyIndex is the in-process verify path beside the bare work
// it cannot avoid, over the same 100,000 keys, for pprof:
//
//	go test -run '^$' -bench VerifyIndex -cpuprofile cpu.out ./projections/
func BenchmarkVerifyIndex(b *testing.B) {
	const n = 100000
	idx := projections.NewVerifyIndex()
	secrets := make([]string, n)
	now := time.Now()
	for i := range secrets {
		s, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
		e, _ := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "k", Actor: domain.Actor{Kind: domain.ActorSystem}}, now, 0, s)
		e.Seq = uint64(i + 1)
		_ = idx.Apply(e)
		secrets[i] = s
	}
	b.Run("index", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			idx.Verify(secrets[i%n], now)
			i++
		}
	})
	b.Run("baseline-sha256-map", func(b *testing.B) {
		m := make(map[[sha256.Size]byte]int, n)
		for i, s := range secrets {
			m[sha256.Sum256([]byte(s))] = i
		}
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			_ = m[sha256.Sum256([]byte(secrets[i%n]))]
			i++
		}
	})
}
