package events

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"
)

func sampleCheckpoints() []Checkpoint {
	hashes := make([]byte, 32*5)
	for i := range hashes {
		hashes[i] = byte(i * 7)
	}
	return []Checkpoint{
		{Version: 2, FromSeq: 0, ToSeq: 3, Seqs: [][2]uint64{{1, 3}}, Hashes: base64.StdEncoding.EncodeToString(hashes[:96]),
			Chain: "ab12", SignedAt: "2026-12-02T07:29:38.821563Z", KeyID: "ff9dfa04362db00f"},
		{Version: 2, FromSeq: 3, ToSeq: 9, Seqs: [][2]uint64{{4, 4}, {7, 9}}, Hashes: base64.StdEncoding.EncodeToString(hashes[:128]),
			Untrusted: []uint64{7, 9}, Chain: "cd34", PrevCheckpoint: "ef56", SignedAt: "2026-12-02T07:30:38.000000Z", KeyID: "0123456789abcdef"},
		{Version: 2, Seqs: [][2]uint64{}, Untrusted: []uint64{}},
	}
}

// TestDecodeCheckpointFastReadsWhatTheCheckpointerWrites: every checkpoint
// as json.Marshal writes it takes the fast path, and reads back the same.
func TestDecodeCheckpointFastReadsWhatTheCheckpointerWrites(t *testing.T) {
	for _, cp := range sampleCheckpoints() {
		body, _ := json.Marshal(cp)
		got, ok := decodeCheckpointFast(body)
		if !ok {
			t.Fatalf("the fast path refused %s", body)
		}
		if !reflect.DeepEqual(got, cp) {
			t.Fatalf("body %s:\ngot  %+v\nwant %+v", body, got, cp)
		}
	}
	for _, body := range []string{
		`{"version":2,"to_seq":18446744073709551000}`, // 20 digits: encoding/json's to judge
		`{"version":2,"to_seq":01}`, `{"version":2,"to_seq":-1}`, `{"version":2,"to_seq":1.0}`,
		`{"version":2,"chain":"a\u0062"}`, `{"version":2,"Chain":"a"}`, `{"version":2,"version":2}`,
		`{"version":2,"seqs":[[1]]}`, `{"version":2,"seqs":[[1,2,3]]}`, `{"version":2,"seqs":[[1,2],]}`,
		`{"version":2,"to_seq":null}`, `{"version":2} x`,
	} {
		if _, ok := decodeCheckpointFast([]byte(body)); ok {
			t.Errorf("the fast path took %s", body)
		}
	}
}

// FuzzDecodeCheckpointFast holds the fast path to encoding/json: whatever
// it accepts, encoding/json accepts too and reads the same.
func FuzzDecodeCheckpointFast(f *testing.F) {
	for _, cp := range sampleCheckpoints() {
		body, _ := json.Marshal(cp)
		f.Add(body)
	}
	f.Add([]byte(`{"version":2,"seqs":null,"untrusted":[ 1 , 2 ],"hashes":""}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fast, ok := decodeCheckpointFast(body)
		if !ok {
			return
		}
		var slow Checkpoint
		if err := json.Unmarshal(body, &slow); err != nil {
			t.Fatalf("fast path took %q, encoding/json refuses it: %v", body, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("body %q:\nfast %+v\nslow %+v", body, fast, slow)
		}
	})
}
