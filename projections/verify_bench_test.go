package projections_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/projections"
)

// BenchmarkProjectionsMemory builds the key table (listing and verify index) for
// 100,000 keys and reports their live heap per key; for a heap profile:
//
//	go test -run '^$' -bench ProjectionsMemory -benchtime 1x -memprofile mem.out ./projections/
func BenchmarkProjectionsMemory(b *testing.B) {
	const n = 100000
	for range b.N {
		evs := make([]domain.Event, n)
		now := time.Now()
		for i := range evs {
			s, _ := domain.GenerateSecret(domain.DefaultPrefix, nil)
			evs[i], _ = domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "service key", Scopes: []string{"read"}, By: domain.SystemPrincipal("", "")}, now, 0, s)
			evs[i].Seq = uint64(i + 1)
		}
		before := liveHeap()
		table := projections.NewTable() // the listing and the verify index
		for _, e := range evs {
			_ = table.Apply(e)
		}
		b.ReportMetric(float64(liveHeap()-before)/n, "B/key")
		runtime.KeepAlive(table)
		runtime.KeepAlive(evs)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
