package projections

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"

	"github.com/keyledger/keyledger/domain"
)

// smallTable holds three keys of two orgs: one rotated twice with a grace
// period, one revoked.
func smallTable(t *testing.T) (*Table, []string) {
	t.Helper()
	table := NewTable()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	actorBy := domain.PersonPrincipal("u1", "Ann", map[string]string{"acme": domain.RoleManager, "globex": domain.RoleManager})
	var secrets []string
	seq := uint64(0)
	apply := func(e domain.Event) {
		seq++
		e.Seq, e.Hash, e.Trusted = seq, fmt.Sprintf("%064x", seq), true
		if k, ok := table.Listing().Get(e.OrgID, e.KeyID); ok {
			e.PrevHash = k.LastHash // chained to its key's last event, as the store appends it
		}
		if err := table.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	var keys []domain.Key
	for i, org := range []string{"acme", "acme", "globex"} {
		s, _ := domain.GenerateSecret("c8k", nil)
		secrets = append(secrets, s)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: "key " + string(rune('a'+i)), Scopes: []string{"read"}, By: actorBy}, now, 0, s)
		if err != nil {
			t.Fatal(err)
		}
		apply(e)
		k, _ := table.Listing().Get(org, e.KeyID)
		keys = append(keys, k)
	}
	s, _ := domain.GenerateSecret("c8k", nil)
	secrets = append(secrets, s)
	rot, _ := keys[0].DecideRotate(domain.RotateKey{GracePeriod: time.Hour, By: actorBy}, now, s)
	apply(rot)
	// Once more: the first secret is then retired, kept whole.
	s2nd, _ := domain.GenerateSecret("c8k", nil)
	secrets = append(secrets, s2nd)
	k0, _ := table.Listing().Get("acme", keys[0].ID)
	rot2, _ := k0.DecideRotate(domain.RotateKey{GracePeriod: time.Hour, By: actorBy}, now, s2nd)
	apply(rot2)
	rev, _ := keys[2].DecideRevoke(domain.RevokeKey{By: actorBy}, now)
	apply(rev)
	// A leak of the first key's first secret, reported after it was
	// replaced: the table keeps the report, a snapshot too.
	k0, _ = table.Listing().Get("acme", keys[0].ID)
	leak, err := k0.DecideLeak(domain.ReportLeak{SecretHash: domain.HashSecret(secrets[0]), Masked: domain.MaskSecret(secrets[0]), URL: "https://github.com/o/r/blob/c/.env",
		Reporter: "github", Revoke: false, By: domain.SystemPrincipal("secret-scanning", "GitHub secret scanning")}, now)
	if err != nil || len(leak) != 1 {
		t.Fatalf("DecideLeak: %v %v", leak, err)
	}
	apply(leak[0])
	if k, _ := table.Listing().Get("acme", keys[0].ID); k.LastLeak == nil || k.LastLeak.URL != "https://github.com/o/r/blob/c/.env" {
		t.Fatalf("the table did not keep the leak: %+v", k.LastLeak)
	}
	// The second key is rotated more often than a key remembers.
	for i := range domain.MaxReplacedSecrets + 4 {
		s, _ := domain.GenerateSecret("c8k", nil)
		secrets = append(secrets, s)
		k, _ := table.Listing().Get("acme", keys[1].ID)
		rot, _ := k.DecideRotate(domain.RotateKey{By: actorBy}, now.Add(time.Duration(i)*time.Second), s)
		apply(rot)
	}
	return table, secrets
}

func encoded(t *testing.T, table *Table) []byte {
	t.Helper()
	var buf bytes.Buffer
	h := snapshotHeader{Version: SnapshotVersion, Seq: table.LastSeq(), SeqHash: "h", Keys: table.rows.n, Taken: 1}
	img, _ := table.image()
	if err := encodeSnapshot(&buf, h, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSnapshotCodec(t *testing.T) {
	table, secrets := smallTable(t)
	// Two events the runner refused, between those the table applied.
	refused := []uint64{2, table.LastSeq() - 1}
	for _, seq := range refused {
		table.Reject(seq)
	}
	raw := encoded(t, table)
	now := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)

	t.Run("ADecodedImageAnswersAsTheTable", func(t *testing.T) {
		h, img, err := decodeSnapshot(bytes.NewReader(raw))
		if err != nil || img == nil {
			t.Fatalf("decode: %v", err)
		}
		restored := NewTable()
		restored.install(img, h.Seq)
		for _, s := range secrets {
			if got, want := restored.Index().Verify(s, now), table.Index().Verify(s, now); got.Code != want.Code || got.Key.ID != want.Key.ID || got.Deprecated != want.Deprecated {
				t.Errorf("verify: got %+v, want %+v", got.Verdict, want.Verdict)
			}
		}
		if got, want := restored.Hashes(), table.Hashes(); got != want {
			t.Errorf("restored table holds %d hashes, want %d", got, want)
		}
		for seq := uint64(1); seq <= table.LastSeq()+1; seq++ {
			gotT, gotK := restored.Judged(seq)
			wantT, wantK := table.Judged(seq)
			if gotT != wantT || gotK != wantK {
				t.Errorf("Judged(%d) = %v, %v after a snapshot, want %v, %v", seq, gotT, gotK, wantT, wantK)
			}
		}
		if trusted, _ := restored.Judged(refused[0]); trusted {
			t.Errorf("a refused event counts again after a snapshot")
		}
		for _, org := range []string{"acme", "globex"} {
			listed, _ := table.Listing().List(org, ListQuery{Status: "all", Limit: 10, Now: now})
			for _, k := range listed {
				got, _ := restored.Listing().Get(org, k.ID)
				if want, _ := table.Listing().Get(org, k.ID); !reflect.DeepEqual(got, want) {
					t.Errorf("%s/%s:\n got %+v\nwant %+v", org, k.ID, got, want)
				}
			}
			got, _ := restored.Listing().List(org, ListQuery{Status: "all", Limit: 10, Now: now})
			want, _ := table.Listing().List(org, ListQuery{Status: "all", Limit: 10, Now: now})
			if len(got) != len(want) {
				t.Fatalf("%s: %d keys, want %d", org, len(got), len(want))
			}
			for i := range got {
				if got[i].ID != want[i].ID || got[i].LastHash != want[i].LastHash || got[i].PreviousSecretHash != want[i].PreviousSecretHash || !got[i].RevokedAt.Equal(want[i].RevokedAt) {
					t.Errorf("%s[%d]:\n got %+v\nwant %+v", org, i, got[i], want[i])
				}
			}
		}
	})

	t.Run("AnyFlippedByteIsRefused", func(t *testing.T) {
		plain, err := io.ReadAll(s2.NewReader(bytes.NewReader(raw)))
		if err != nil {
			t.Fatal(err)
		}
		for i := range plain {
			spoilt := bytes.Clone(plain)
			spoilt[i] ^= 0x40
			var buf bytes.Buffer
			w := s2.NewWriter(&buf)
			_, _ = w.Write(spoilt)
			_ = w.Close()
			if _, img, err := decodeSnapshot(&buf); err == nil && img != nil {
				t.Fatalf("a snapshot with byte %d of %d flipped was taken", i, len(plain))
			}
		}
	})
}

// TestSnapshotOfAnEarlierVersionIsNotInstalled: version 4 kept every
// retired hash, in another layout; such a snapshot is passed over, and the
// stream replayed.
func TestSnapshotOfAnEarlierVersionIsNotInstalled(t *testing.T) {
	table, _ := smallTable(t)
	var buf bytes.Buffer
	img, _ := table.image()
	if err := encodeSnapshot(&buf, snapshotHeader{Version: SnapshotVersion - 1, Seq: table.LastSeq(), SeqHash: "h", Keys: table.rows.n}, img); err != nil {
		t.Fatal(err)
	}
	h, got, err := decodeSnapshot(&buf)
	if err != nil || got != nil {
		t.Fatalf("decode of a version %d snapshot: %v, %v; want nothing to install and no error", h.Version, got != nil, err)
	}
	s := &Snapshotter{}
	if err := s.fits(context.Background(), h); err == nil || !strings.Contains(err.Error(), "version") {
		t.Fatalf("fits: %v, want a version mismatch", err)
	}
}

// TestASnapshotOfManyKeysDecodesIntoAnIndexWithoutPiles: the hashes come
// out of a snapshot sorted by the place they hash to; decoded into an
// index that starts small and grows, they piled into one run as long as
// the keys (each put probing to its end: minutes at ten million keys).
// Here with the reservation bound made small, as ten million keys are to
// the real one.
func TestASnapshotOfManyKeysDecodesIntoAnIndexWithoutPiles(t *testing.T) {
	defer func(was int) { sizeHint = was }(sizeHint)
	sizeHint = 1024
	table := NewTable()
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	by := domain.SystemPrincipal("test", "test")
	const n = 40000
	for i := range n {
		s, _ := domain.GenerateSecret("c8k", nil)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: "acme", Name: "k", Scopes: []string{"read"}, By: by}, now, 0, s)
		if err != nil {
			t.Fatal(err)
		}
		e.Seq, e.Hash, e.Trusted = uint64(i+1), fmt.Sprintf("%064x", i+1), true
		if err := table.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	_, img, err := decodeSnapshot(bytes.NewReader(encoded(t, table)))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.byHash.len(); got != n {
		t.Fatalf("decoded %d hashes, want %d", got, n)
	}
	// Placed at random, at the index's load (at most 0.8), a put looks at
	// a few entries on average; a pile makes it thousands.
	if per := float64(img.byHash.probed) / n; per > 10 {
		t.Errorf("decoding put each hash after %.0f entries on average", per)
	}
}
