package domain

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestFindKeys: every generated key is found, wherever it sits in text
// (quoted, in a .env line, at the edges, beside another); a key whose
// checksum is broken, or that sits inside a longer word, is not; and
// KeyPattern matches what FindKeys finds (and, without the checksum,
// the broken ones too).
func TestFindKeys(t *testing.T) {
	var keys []string
	for _, prefix := range []string{"c8k", "a", "acme2prod", strings.Repeat("z", 20)} {
		for range 50 {
			k, err := GenerateSecret(prefix, nil)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	broken := func(k string) string { // one character of the random part changed
		b := []byte(k)
		i := strings.IndexByte(k, '_') + 5
		b[i] = map[bool]byte{true: 'B', false: 'A'}[b[i] == 'A']
		return string(b)
	}
	re := regexp.MustCompile(KeyPattern)
	for _, k := range keys {
		for _, text := range []string{k, "KEY=" + k + "\n", `"` + k + `"`, "a " + k + " b", "x_" + k, k + "_suffix", "(" + k + ")", "\t" + k + "," + k} {
			var got []string
			FindKeys([]byte(text), func(at int, key string) {
				if text[at:at+len(key)] != key {
					t.Errorf("offset %d of %q is not %q", at, text, key)
				}
				got = append(got, key)
			})
			if len(got) == 0 || slices.ContainsFunc(got, func(g string) bool { return g != k }) {
				t.Errorf("in %q found %v, want %s", text, got, k)
			}
			if m := re.FindStringSubmatch(text); m == nil || m[1] != k {
				t.Errorf("KeyPattern in %q: %v", text, m)
			}
		}
		for _, miss := range []string{broken(k), "X" + k, "9" + k, k + "a", k[:len(k)-1], strings.ToUpper(k[:3]) + k[3:], strings.Repeat("a", 20) + k} {
			FindKeys([]byte("v="+miss+"\n"), func(_ int, key string) {
				t.Errorf("found %q in the near-miss %q", key, miss)
			})
		}
		if re.FindString("v="+broken(k)+"\n") == "" {
			t.Error("KeyPattern alone should match a broken checksum; the checksum check refuses it")
		}
	}
	FindKeys([]byte("__ _ a_ _b "+strings.Repeat("_", 100)), func(_ int, key string) { t.Errorf("found %q in underscores", key) })
}
