package events

import (
	"fmt"
	"testing"
	"time"
)

func TestUsageBatchesRoundTrip(t *testing.T) {
	base := time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)
	var uses []KeyUse
	for i := range 500 {
		uses = append(uses, KeyUse{Org: fmt.Sprintf("org-%d", i/100), ID: fmt.Sprintf("key_%026d", i), At: base.Add(time.Duration(i%5-2) * time.Minute)})
	}
	var got []KeyUse
	var all []byte
	batches := 0
	for rest := uses; len(rest) > 0; batches++ {
		var b []byte
		b, rest = encodeUses(nil, rest, 1024)
		if len(b) > 1024 {
			t.Errorf("a batch of %d bytes, over its limit of 1024", len(b))
		}
		all = append(all, b...)
	}
	// A rollup is batches one after another: read them as one.
	if err := decodeUses(all, func(org, id string, at time.Time) { got = append(got, KeyUse{org, id, at}) }); err != nil {
		t.Fatal(err)
	}
	if batches < 10 {
		t.Errorf("%d batches, want many of at most 1 KiB", batches)
	}
	if len(got) != len(uses) {
		t.Fatalf("read %d uses, want %d", len(got), len(uses))
	}
	for i := range uses {
		if got[i] != uses[i] {
			t.Fatalf("use %d: read %+v, want %+v", i, got[i], uses[i])
		}
	}
	if err := decodeUses([]byte("=acme\nkey_A\n"), func(string, string, time.Time) { t.Error("a batch without a header was read") }); err == nil {
		t.Error("a batch without a header is no error")
	}
}
