package domain_test

import (
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// FuzzWellFormed: no input panics; whatever is well formed has the key
// shape, and a generated key stays well formed while any change to one
// character of its random part or checksum makes it malformed.
//
//	go test -run '^$' -fuzz FuzzWellFormed -fuzztime 30s ./domain/
func FuzzWellFormed(f *testing.F) {
	for _, seed := range []string{"", "c8k_", "c8k_abc", "C8K_" + strings.Repeat("A", 49), "c8k_" + strings.Repeat("0", 49), "a_b_c", "_" + strings.Repeat("x", 49)} {
		f.Add(seed)
	}
	key, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(key)
	f.Fuzz(func(t *testing.T, s string) {
		if domain.WellFormed(s) {
			prefix, rest, ok := strings.Cut(s, "_")
			if !ok || domain.ValidatePrefix(prefix) != nil || len(rest) != 49 {
				t.Fatalf("%q is accepted without the key shape", s)
			}
			if m := domain.MaskSecret(s); !strings.HasSuffix(m, s[len(s)-4:]) || strings.Contains(m, rest[:20]) {
				t.Fatalf("mask %q of %q", m, s)
			}
		}
		if len(s) > 0 {
			i := len(key) - 1 - int(s[0])%49
			changed := key[:i] + string(domain.Base62[(strings.IndexByte(domain.Base62, key[i])+1+int(s[len(s)-1])%61)%62]) + key[i+1:]
			if changed != key && domain.WellFormed(changed) {
				t.Fatalf("a one-character change of a key is still well formed: %q", changed)
			}
		}
	})
}
