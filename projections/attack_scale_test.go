package projections

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// TestAttackRotatedKeysDecodeIntoAnIndexWithoutPiles: a key's older
// secrets stay in the hash index beside its current and previous one
// (up to domain.MaxReplacedSecrets of them), and they are read after the
// index. Sized for rows and previous secrets only, a snapshot of keys
// rotated a few times each held more hashes than its index had room for
// at the start, and the sorted puts piled into one run again (each
// probing to its end). Rotations are an ordinary command: any manager's
// key rotated often enough makes every cold start from the snapshot
// quadratic. Here with the reservation bound made small, as millions of
// retired secrets are to the real one.
func TestAttackRotatedKeysDecodeIntoAnIndexWithoutPiles(t *testing.T) {
	defer func(was int) { sizeHint = was }(sizeHint)
	sizeHint = 1024
	table := NewTable()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	by := domain.SystemPrincipal("test", "test")
	const keys, rotations = 2000, domain.MaxReplacedSecrets
	seq := uint64(0)
	apply := func(e domain.Event) {
		t.Helper()
		seq++
		e.Seq, e.Hash, e.Trusted = seq, fmt.Sprintf("%064x", seq), true
		if k, ok := table.Listing().Get(e.OrgID, e.KeyID); ok {
			e.PrevHash = k.LastHash
		}
		if err := table.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	for range keys {
		s, _ := domain.GenerateSecret("c8k", nil)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "k", Scopes: []string{"read"}, By: by}, now, 0, s)
		if err != nil {
			t.Fatal(err)
		}
		apply(e)
		for range rotations {
			k, _ := table.Listing().Get("acme", e.KeyID)
			s, _ := domain.GenerateSecret("c8k", nil)
			rot, err := k.DecideRotate(domain.RotateKey{GracePeriod: time.Hour, By: by}, now, s)
			if err != nil {
				t.Fatal(err)
			}
			apply(rot)
		}
	}
	want := table.byHash.len()
	if want <= 2*keys+sizeHint {
		t.Fatalf("only %d hashes indexed: the table does not hold more than rows and previous secrets", want)
	}
	_, img, err := decodeSnapshot(bytes.NewReader(encoded(t, table)))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.byHash.len(); got != want {
		t.Fatalf("decoded %d hashes, want %d", got, want)
	}
	if per := float64(img.byHash.probed) / float64(want); per > 10 {
		t.Errorf("decoding put each of %d hashes after %.0f entries on average", want, per)
	}
}
