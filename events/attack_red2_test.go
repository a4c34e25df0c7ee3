package events

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestAttackCheckpointCodecDifferentials (holds): bodies chosen where a
// hand-written JSON reader usually parts from encoding/json — nulls in
// lists, short or padded pairs, case-folded and repeated names, 19- and
// 20-digit numbers, exponents, leading zeros, "null" glued to a token,
// whitespace of every kind, trailing bytes, non-ASCII and escapes. Each
// one the fast path accepts must read as encoding/json reads it.
func TestAttackCheckpointCodecDifferentials(t *testing.T) {
	bodies := []string{
		`{"version":2,"untrusted":[null]}`,
		`{"version":2,"untrusted":[1,null]}`,
		`{"version":2,"seqs":[[1,null]]}`,
		`{"version":2,"seqs":[null]}`,
		`{"version":2,"seqs":[[1]]}`,
		`{"version":2,"seqs":[]}`,
		`{"version":2,"seqs":null}`,
		`{"version":2,"seqs":nullnull}`,
		`{"version":2,"seqs":null ,"untrusted":null}`,
		`{"version":2,"VERSION":1}`,
		`{"version":2,"versıon":1}`,
		`{"version":2,"ſeqs":[[1,2]]}`,
		`{"version":2,"to_seq":9999999999999999999}`,
		`{"version":2,"to_seq":18446744073709551615}`,
		`{"version":2,"to_seq":1e3}`,
		`{"version":2,"to_seq":1E3}`,
		`{"version":2,"to_seq":00}`,
		`{"version":2,"to_seq":0}`,
		`{"version":2,"to_seq":-0}`,
		`{"version":02}`,
		`{"version":2.}`,
		`{"version":999999999}`,
		`{"version":1000000000}`,
		`{"version":-2}`,
		"\t\r\n {\t\"version\"\n:\r2\t}\n\r ",
		"{\"version\":2}\x00",
		"{\"version\":2}\v",
		"\xef\xbb\xbf{\"version\":2}",
		`{"version":2,"chain":"\u0000"}`,
		`{"version":2,"chain":"é"}`,
		"{\"version\":2,\"chain\":\"\xff\"}",
		`{"version":2,"chain":null}`,
		`{"version":2,"chain":""}`,
		`{"version":2,"hashes":"","hashes":"AA=="}`,
		`{"version":2}{"version":2}`,
		`{"version":2,}`,
		`{,"version":2}`,
		`{"version":2 "to_seq":1}`,
		`{"version":2,"untrusted":[1 2]}`,
		`{"version":2,"untrusted":[1,]}`,
		`{"version":2,"untrusted":[,1]}`,
		`{"version":2,"untrusted":[01]}`,
		`{"version":2,"seqs":[[1,2][3,4]]}`,
		`{"version":2,"seqs":[[1,2],[3,4]]}`,
		`{"version":2,"key_id":"a","signature":"x"}`,
		`{"version":2,"from_seq":true}`,
		`{}`,
		`{"version":2`,
		`{"version":2,"to_seq":1`,
	}
	for _, body := range bodies {
		fast, ok := decodeCheckpointFast([]byte(body))
		if !ok {
			continue
		}
		var slow Checkpoint
		if err := json.Unmarshal([]byte(body), &slow); err != nil {
			t.Errorf("the fast path took %q, which encoding/json refuses: %v", body, err)
			continue
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Errorf("%q:\nfast %+v\nslow %+v", body, fast, slow)
		}
	}
}
