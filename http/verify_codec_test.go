package http

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzVerifyCodec holds the verify fast path to encoding/json: a body the
// fast path takes decodes, strictly, to the same key, and an answer written
// by hand is the very bytes an Encoder writes.
//
//	go test -run '^$' -fuzz FuzzVerifyCodec -fuzztime 30s ./http/
func FuzzVerifyCodec(f *testing.F) {
	for _, seed := range []string{
		`{"key":"c8k_abc"}`, ` { "key" : "c8k_abc" } `, "{\"key\":\"a\tb\"}", `{"key":"a\"b"}`,
		`{"key":"<&>"}`, `{"key":"é"}`, "{\"key\":\"\xff\"}", `{"key":"x","other":1}`, `{"key":"x"}{}`,
		`{"key":"x","key":"y"}`, `{"Key":"x"}`, `{"key":1}`, `{}`, `{"key":"\u2028"}`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if key, ok := plainKeyBody(body); ok {
			var req verifyRequest
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil || dec.More() {
				t.Fatalf("the fast path took %q, which the decoder refuses: %v", body, err)
			}
			if req.Key != string(key) {
				t.Fatalf("body %q: fast path %q, decoder %q", body, key, req.Key)
			}
		}
		s := string(body)
		view := VerifyView{Valid: len(s)%2 == 0, Code: s, OrgID: &s, Name: &s, Scopes: []string{s, "read"}, ExpiresAt: &s, Deprecated: true}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(&view); err != nil {
			t.Fatal(err)
		}
		if got := appendVerifyView(nil, &view); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("string %q:\n got %s\nwant %s", s, got, want.Bytes())
		}
	})
}

func TestVerifyViewNullsAndEmptiesAsEncodingJSON(t *testing.T) {
	for _, view := range []VerifyView{{Code: "MALFORMED"}, {Code: "VALID", Scopes: []string{}}} {
		var want bytes.Buffer
		_ = json.NewEncoder(&want).Encode(&view)
		if got := appendVerifyView(nil, &view); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("got %s\nwant %s", got, want.Bytes())
		}
	}
}
