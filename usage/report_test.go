package usage_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keyledger/keyledger/usage"
)

// TestMergeReportIsBounded: what a holder of the read-only credential may
// report is bounded whatever it writes: the keys of one report, a
// caller's count by the key's counted minutes, a service name's form, the
// report's size; and a report only adds to the counts, once, as this
// instance's own (its next flush shares them).
func TestMergeReportIsBounded(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 30, 0, time.UTC)
	o := usage.NewOutcomes()
	o.Now = func() time.Time { return now }
	minute := now.Unix() / 60
	all := func(string, string) bool { return true }
	line := func(id string, valid int, callerCount uint64) string {
		return fmt.Sprintf(`{"o":"acme","k":%q,"m":[[%d,%d,0,0,0,0]],"c":[{"a":"198.51.100.9","u":"ua","s":"other","f":%d,"l":%d,"n":%d,"r":0}]}`,
			id, minute, valid, now.Unix(), now.Unix(), callerCount)
	}

	n, err := o.MergeReport([]byte("keyledger-outcomes-v1\n"+line("k1", 5, 1_000_000_000)+"\n"), "billing", all)
	if err != nil || n != 1 {
		t.Fatalf("a report of one key: %d, %v", n, err)
	}
	if got := o.Totals("acme", "k1", now.Add(-time.Hour)).Valid; got != 5 {
		t.Errorf("k1: %d valid, want 5", got)
	}
	cs := o.Callers("acme", "k1")
	if len(cs) != 1 || cs[0].Count != 5 || cs[0].Service != "billing" {
		t.Errorf("k1's callers: %+v, want one of 5 calls named billing", cs)
	}

	var b strings.Builder
	b.WriteString("keyledger-outcomes-v1\n")
	for i := range usage.MaxReportKeys + 5 {
		fmt.Fprintf(&b, `{"o":"a","k":"m%d","m":[[%d,1,0,0,0,0]]}`+"\n", i, minute)
	}
	n, err = o.MergeReport([]byte(b.String()), "billing", all)
	if err == nil || n != usage.MaxReportKeys {
		t.Errorf("a report of %d keys counted %d (%v), want %d and an error", usage.MaxReportKeys+5, n, err, usage.MaxReportKeys)
	}

	for _, tc := range []struct{ name, service, body string }{
		{"NoService", "", "keyledger-outcomes-v1\n"},
		{"ServiceWithSpaces", "a b", "keyledger-outcomes-v1\n"},
		{"ServiceTooLong", strings.Repeat("s", usage.MaxService+1), "keyledger-outcomes-v1\n"},
		{"NotABatch", "billing", "hello\n"},
		{"TooLarge", "billing", "keyledger-outcomes-v1\n" + strings.Repeat(" ", usage.MaxReportBytes)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := o.Totals("acme", "k1", now.Add(-time.Hour)).Valid
			if n, err := o.MergeReport([]byte(tc.body+line("k1", 5, 5)+"\n"), tc.service, all); err == nil || n != 0 {
				t.Errorf("counted %d, %v", n, err)
			}
			if got := o.Totals("acme", "k1", now.Add(-time.Hour)).Valid; got != before {
				t.Errorf("k1 went from %d to %d valid", before, got)
			}
		})
	}
}
