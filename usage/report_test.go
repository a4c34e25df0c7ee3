package usage_test

import (
	"fmt"
	"net/netip"
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
	o.MaxReportedKeys = 1 << 20 // TestReportsCountAtMostMaxReportedKeys checks that bound
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

// TestReportsCountAtMostMaxReportedKeys: the keys reports may count in
// an hour are bounded, whatever they name; a key already counted within
// the hour is counted again; an hour later the room is given back.
func TestReportsCountAtMostMaxReportedKeys(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 30, 0, time.UTC)
	o := usage.NewOutcomes()
	o.Now = func() time.Time { return now }
	o.MaxReportedKeys = 3
	all := func(string, string) bool { return true }
	report := func(ids ...string) (int, error) {
		var b strings.Builder
		b.WriteString("keyledger-outcomes-v1\n")
		for _, id := range ids {
			fmt.Fprintf(&b, `{"o":"acme","k":%q,"m":[[%d,1,0,0,0,0]]}`+"\n", id, now.Unix()/60)
		}
		return o.MergeReport([]byte(b.String()), "billing", all)
	}
	if n, err := report("a", "b", "c", "d", "e"); n != 3 || err == nil {
		t.Errorf("five keys with room for three: %d counted (%v)", n, err)
	}
	if n, err := report("a", "d"); n != 1 || err == nil {
		t.Errorf("a key counted and a new one: %d counted (%v), want the first only", n, err)
	}
	if o.ReportsRefused() != 3 {
		t.Errorf("%d refused, want 3", o.ReportsRefused())
	}
	// An hour on, the earlier keys' room is given back, and a minute an
	// hour old no longer counts.
	now = now.Add(time.Duration(usage.ReportReach) * time.Minute)
	if n, err := report("d", "e", "f"); n != 3 || err != nil {
		t.Errorf("an hour later: %d counted (%v), want 3", n, err)
	}
	old := fmt.Sprintf("keyledger-outcomes-v1\n"+`{"o":"acme","k":"a","m":[[%d,1,0,0,0,0]]}`+"\n", now.Add(-61*time.Minute).Unix()/60)
	if n, _ := o.MergeReport([]byte(old), "billing", all); n != 0 {
		t.Errorf("a minute 61 minutes old was counted")
	}
}

// TestReportedCallersTakeAtMostFivePlaces: however many callers reports
// name, they hold at most MaxReportedCallers of a key's places, and never
// push out a caller keyledger saw itself.
func TestReportedCallersTakeAtMostFivePlaces(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 30, 0, time.UTC)
	o := usage.NewOutcomes()
	o.Now = func() time.Time { return now }
	seen := usage.Caller{Address: netip.MustParseAddr("192.0.2.1"), UserAgent: "curl/8"}
	for i := range usage.MaxCallers - 5 {
		seen.UserAgent = fmt.Sprintf("client-%d", i)
		o.Record("acme", "k", usage.Outcome{Class: usage.Valid}, seen, now.Add(-time.Minute))
	}
	var b strings.Builder
	b.WriteString("keyledger-outcomes-v1\n")
	for i := range 10 {
		fmt.Fprintf(&b, `{"o":"acme","k":"k","m":[[%d,100,0,0,0,0]],"c":[{"a":"198.51.100.%d","u":"forged","f":%d,"l":%d,"n":1,"r":0}]}`+"\n",
			now.Unix()/60, i, now.Unix(), now.Unix())
	}
	if _, err := o.MergeReport([]byte(b.String()), "billing", func(string, string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	reported, own := 0, 0
	for _, c := range o.Callers("acme", "k") {
		if c.Service != "" {
			reported++
		} else {
			own++
		}
	}
	if reported != usage.MaxReportedCallers || own != usage.MaxCallers-5 {
		t.Errorf("%d reported and %d seen callers, want %d and %d", reported, own, usage.MaxReportedCallers, usage.MaxCallers-5)
	}
}
