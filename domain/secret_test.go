package domain_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

// alphabet is the base62 alphabet of PRODUCT.md, written out again here so
// that the tests do not trust the code they check.
const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// checksum computes the 6-character base62 CRC-32 (IEEE) of body the way
// PRODUCT.md describes it: most significant digit first, left-padded with '0'.
func checksum(t *testing.T, body string) string {
	t.Helper()
	sum := crc32.ChecksumIEEE([]byte(body))
	var digits []byte
	for ; sum > 0; sum /= 62 {
		digits = append(digits, alphabet[sum%62])
	}
	slices.Reverse(digits)
	if len(digits) > 6 {
		t.Fatalf("checksum of %q has %d digits", body, len(digits))
	}
	return strings.Repeat("0", 6-len(digits)) + string(digits)
}

// withChecksum returns body followed by its correct checksum, so that a test
// can build a key that is wrong in one way only.
func withChecksum(t *testing.T, body string) string {
	t.Helper()
	return body + checksum(t, body)
}

// cycleReader yields the bytes of b again and again, forever.
type cycleReader struct {
	b []byte
	i int
}

func (r *cycleReader) Read(p []byte) (int, error) {
	for j := range p {
		p[j] = r.b[r.i%len(r.b)]
		r.i++
	}
	return len(p), nil
}

// counting returns a reader yielding start, start+1, … (mod 248), all of
// them accepted by the rejection sampling.
func counting(start int) io.Reader {
	b := make([]byte, 248)
	for i := range b {
		b[i] = byte((start + i) % 248)
	}
	return &cycleReader{b: b}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func generate(t *testing.T, prefix string, r io.Reader) string {
	t.Helper()
	s, err := domain.GenerateSecret(prefix, r)
	if err != nil {
		t.Fatalf("GenerateSecret(%q): %v", prefix, err)
	}
	return s
}

func TestBase62IsTheContractAlphabet(t *testing.T) {
	if got, want := domain.Base62, alphabet; got != want {
		t.Fatalf("Base62 = %q, want %q", got, want)
	}
}

func TestGenerateSecret(t *testing.T) {
	t.Run("HasPrefixRandomAndChecksum", func(t *testing.T) {
		for _, prefix := range []string{domain.DefaultPrefix, "a", "0", "acme2", strings.Repeat("z", 20)} {
			s := generate(t, prefix, nil)
			if got, want := len(s), len(prefix)+1+43+6; got != want {
				t.Fatalf("len(%q) = %d, want %d", s, got, want)
			}
			if !strings.HasPrefix(s, prefix+"_") {
				t.Fatalf("%q does not start with %q", s, prefix+"_")
			}
			body, sum := s[:len(s)-6], s[len(s)-6:]
			if got, want := sum, checksum(t, body); got != want {
				t.Fatalf("checksum of %q = %q, want %q", s, got, want)
			}
			for _, c := range s[len(prefix)+1:] {
				if !strings.ContainsRune(alphabet, c) {
					t.Fatalf("%q holds %q, not base62", s, c)
				}
			}
		}
	})

	t.Run("KnownBytesGiveKnownKey", func(t *testing.T) {
		// Bytes 0, 1, 2, … pick the alphabet in order.
		body := "c8k_" + alphabet[:43]
		if got, want := generate(t, "c8k", counting(0)), withChecksum(t, body); got != want {
			t.Fatalf("GenerateSecret = %q, want %q", got, want)
		}
	})

	t.Run("ShortChecksumIsLeftPaddedWithZero", func(t *testing.T) {
		// About one CRC in five is below 62^5 and needs padding; find one
		// among deterministic keys.
		for i := range 248 {
			s := generate(t, "c8k", counting(i))
			if crc32.ChecksumIEEE([]byte(s[:len(s)-6])) >= 62*62*62*62*62 {
				continue
			}
			if got, want := s[len(s)-6:], checksum(t, s[:len(s)-6]); got != want || got[0] != '0' {
				t.Fatalf("checksum of %q = %q, want %q starting with '0'", s, got, want)
			}
			if !domain.WellFormed(s) {
				t.Fatalf("WellFormed(%q) = false, want true", s)
			}
			return
		}
		t.Fatal("no key with a checksum below 62^5 among 248 tries")
	})

	t.Run("DistinctKeys", func(t *testing.T) {
		seen := map[string]bool{}
		for range 100 {
			s := generate(t, "c8k", nil)
			if seen[s] {
				t.Fatalf("%q generated twice", s)
			}
			seen[s] = true
		}
	})

	t.Run("BadPrefixIsInvalid", func(t *testing.T) {
		for _, prefix := range []string{"", "C8K", "c8-k", "c8.k", "c8_k", "c8k ", "é", strings.Repeat("a", 21)} {
			_, err := domain.GenerateSecret(prefix, counting(0))
			if got, want := domain.ErrorCode(err), domain.EINVALID; got != want {
				t.Errorf("GenerateSecret(%q) error code = %q (%v), want %q", prefix, got, err, want)
			}
		}
	})
}

// TestGenerateSecretRejectionSampling checks that bytes >= 248 are skipped and
// every other byte b gives alphabet[b%62]: the output depends on the accepted
// bytes only.
func TestGenerateSecretRejectionSampling(t *testing.T) {
	interleaved := func() []byte {
		var b []byte
		for i := 0; len(b) < 1024; i++ {
			for j := range i % 4 { // 0 to 3 rejected bytes between accepted ones
				b = append(b, byte(248+(i+j)%8))
			}
			b = append(b, byte((i*37+11)%248))
		}
		return b
	}
	longRun := func() []byte {
		b := bytes.Repeat([]byte{0xff}, 200) // more than three 64-byte reads
		for i := 0; len(b) < 1024; i++ {
			b = append(b, byte(i%248))
		}
		return b
	}
	highAccepted := func() []byte {
		var b []byte
		for i := 0; len(b) < 1024; i++ {
			b = append(b, byte(186+i%62), 248, 255) // 186..247 map to 0..61
		}
		return b
	}
	for _, tt := range []struct {
		name   string
		stream []byte
	}{
		{"RejectedBytesBetweenAcceptedOnesAreSkipped", interleaved()},
		{"LongRunOfRejectedBytesIsSkipped", longRun()},
		{"AcceptedBytesAreTakenModulo62", highAccepted()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var accepted []byte
			for _, b := range tt.stream {
				if b < 248 {
					accepted = append(accepted, b)
				}
			}
			var want strings.Builder
			for _, b := range accepted[:43] {
				want.WriteByte(alphabet[b%62])
			}

			got := generate(t, "c8k", bytes.NewReader(tt.stream))
			if got, want := got[len("c8k_"):len(got)-6], want.String(); got != want {
				t.Fatalf("random part = %q, want %q", got, want)
			}
			if !domain.WellFormed(got) {
				t.Fatalf("WellFormed(%q) = false, want true", got)
			}
			if only := generate(t, "c8k", bytes.NewReader(accepted)); got != only {
				t.Fatalf("with rejected bytes: %q; without: %q; want equal", got, only)
			}
		})
	}
}

// TestGenerateSecretIsRoughlyUniform is a sanity check, not a statistical
// proof: with 2000 keys each symbol is expected about 1387 times (standard
// deviation about 37), so a bound of ±20% is some seven deviations wide.
func TestGenerateSecretIsRoughlyUniform(t *testing.T) {
	const keys = 2000
	counts := map[rune]int{}
	for range keys {
		s := generate(t, "c8k", nil)
		for _, c := range s[len("c8k_") : len(s)-6] {
			counts[c]++
		}
	}
	expected := float64(keys*43) / 62
	for _, c := range alphabet {
		if got := float64(counts[c]); got < 0.8*expected || got > 1.2*expected {
			t.Errorf("symbol %q drawn %v times, want within 20%% of %.0f", c, got, expected)
		}
	}
}

func TestGenerateSecretReaderErrorIsReturned(t *testing.T) {
	boom := errors.New("boom")
	for _, tt := range []struct {
		name string
		r    io.Reader
		is   error
	}{
		{"FailingReader", errReader{boom}, boom},
		{"ShortReader", bytes.NewReader(make([]byte, 10)), io.ErrUnexpectedEOF},
		{"TooFewAcceptedBytes", bytes.NewReader(make([]byte, 40)), io.ErrUnexpectedEOF},
		{"OnlyRejectedBytesThenEOF", bytes.NewReader(bytes.Repeat([]byte{0xff}, 64*4)), io.EOF},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := domain.GenerateSecret("c8k", tt.r)
			if !errors.Is(err, tt.is) {
				t.Fatalf("GenerateSecret error = %v, want %v", err, tt.is)
			}
			if s != "" {
				t.Fatalf("GenerateSecret = %q with an error, want empty", s)
			}
		})
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"c8k", "a", "0", "abc123", strings.Repeat("a", 20)} {
		if err := domain.ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", "C8K", "c8-k", "c8.k", "c8_k", " c8k", "c8k\n", "é", strings.Repeat("a", 21)} {
		if got, want := domain.ErrorCode(domain.ValidatePrefix(p)), domain.EINVALID; got != want {
			t.Errorf("ValidatePrefix(%q) code = %q, want %q", p, got, want)
		}
	}
}

func TestWellFormed(t *testing.T) {
	key := generate(t, "c8k", counting(5))
	random := key[len("c8k_") : len(key)-6]

	t.Run("GeneratedKeysAreWellFormed", func(t *testing.T) {
		for _, prefix := range []string{"c8k", "a", "0", strings.Repeat("a", 20)} {
			for range 20 {
				if s := generate(t, prefix, nil); !domain.WellFormed(s) {
					t.Fatalf("WellFormed(%q) = false, want true", s)
				}
			}
		}
	})

	t.Run("AnyChangedCharacterIsMalformed", func(t *testing.T) {
		for i := range key {
			b := []byte(key)
			// Another character of the same class, so that only the
			// checksum can tell.
			switch {
			case b[i] == '_':
				continue
			case b[i] == 'z':
				b[i] = 'y'
			case b[i] == '9':
				b[i] = '8'
			case b[i] == 'Z':
				b[i] = 'Y'
			default:
				b[i]++
			}
			if domain.WellFormed(string(b)) {
				t.Errorf("WellFormed(%q) (position %d changed) = true, want false", b, i)
			}
		}
	})

	for _, tt := range []struct {
		name string
		s    string
	}{
		{"Empty", ""},
		{"PrefixOnly", "c8k_"},
		{"OneCharacterShort", key[:len(key)-1]},
		{"OneCharacterLong", key + "0"},
		{"RandomOneShortWithGoodChecksum", withChecksum(t, "c8k_"+random[:42])},
		{"RandomOneLongWithGoodChecksum", withChecksum(t, "c8k_"+random+"A")},
		{"UpperCasePrefix", withChecksum(t, "C8K_"+random)},
		{"DashInPrefix", withChecksum(t, "c8-k_"+random)},
		{"DotInPrefix", withChecksum(t, "c8.k_"+random)},
		{"SpaceInPrefix", withChecksum(t, "c8 k_"+random)},
		{"UnicodeInPrefix", withChecksum(t, "cé_"+random)},
		{"PrefixTooLong", withChecksum(t, strings.Repeat("a", 21)+"_"+random)},
		{"MissingUnderscore", withChecksum(t, "c8k"+random)},
		{"EmptyPrefix", withChecksum(t, "_"+random)},
		{"DashInRandom", withChecksum(t, "c8k_"+random[:20]+"-"+random[21:])},
		{"UnderscoreInRandom", withChecksum(t, "c8k_"+random[:20]+"_"+random[21:])},
		{"PlusInRandom", withChecksum(t, "c8k_"+random[:42]+"+")},
		{"SpaceInRandom", withChecksum(t, "c8k_ "+random[1:])},
		{"NonASCIIInRandom", withChecksum(t, "c8k_"+random[:41]+"é")},
		{"NonBase62Checksum", key[:len(key)-1] + "-"},
		{"LeadingSpace", " " + key},
		{"TrailingNewline", key + "\n"},
	} {
		t.Run(tt.name+"IsMalformed", func(t *testing.T) {
			if domain.WellFormed(tt.s) {
				t.Fatalf("WellFormed(%q) = true, want false", tt.s)
			}
		})
	}
}

func TestHashSecret(t *testing.T) {
	for _, s := range []string{generate(t, "c8k", nil), generate(t, "acme", nil), "", "x"} {
		sum := sha256.Sum256([]byte(s))
		if got, want := domain.HashSecret(s), "sha256:"+hex.EncodeToString(sum[:]); got != want {
			t.Errorf("HashSecret(%q) = %q, want %q", s, got, want)
		}
	}
	if got := domain.HashSecret("c8k_x"); !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(got) {
		t.Errorf("HashSecret = %q, want sha256: and 64 lower-case hex digits", got)
	}
	if a, b := domain.HashSecret("c8k_a"), domain.HashSecret("c8k_b"); a == b {
		t.Errorf("HashSecret of different secrets both %q", a)
	}
}

func TestParseHash(t *testing.T) {
	t.Run("RoundTrips", func(t *testing.T) {
		secret := generate(t, "c8k", nil)
		h := domain.HashSecret(secret)
		sum, ok := domain.ParseHash(h)
		if !ok {
			t.Fatalf("ParseHash(%q) not ok", h)
		}
		if got, want := sum, sha256.Sum256([]byte(secret)); got != want {
			t.Fatalf("ParseHash(%q) = %x, want %x", h, got, want)
		}
		if got, want := domain.FormatHash(sum), h; got != want {
			t.Fatalf("FormatHash(ParseHash(h)) = %q, want %q", got, want)
		}
	})

	hexDigits := strings.Repeat("0123456789abcdef", 4)
	for _, tt := range []struct {
		name string
		s    string
	}{
		{"Empty", ""},
		{"PrefixOnly", "sha256:"},
		{"NoPrefix", hexDigits},
		{"OtherAlgorithm", "sha512:" + hexDigits},
		{"UpperCasePrefix", "SHA256:" + hexDigits},
		{"NoColon", "sha256" + hexDigits},
		{"OneDigitShort", "sha256:" + hexDigits[:63]},
		{"OneDigitLong", "sha256:" + hexDigits + "0"},
		{"NonHexDigit", "sha256:" + hexDigits[:63] + "g"},
		{"Space", "sha256: " + hexDigits[1:]},
	} {
		t.Run(tt.name+"IsRejected", func(t *testing.T) {
			if _, ok := domain.ParseHash(tt.s); ok {
				t.Fatalf("ParseHash(%q) ok, want not ok", tt.s)
			}
		})
	}
}

func TestMaskSecret(t *testing.T) {
	for _, prefix := range []string{"c8k", "a", strings.Repeat("b", 20)} {
		s := generate(t, prefix, nil)
		if got, want := domain.MaskSecret(s), prefix+"_****"+s[len(s)-4:]; got != want {
			t.Errorf("MaskSecret(%q) = %q, want %q", s, got, want)
		}
		if random := s[len(prefix)+1 : len(s)-6]; strings.Contains(domain.MaskSecret(s), random[:8]) {
			t.Errorf("MaskSecret(%q) = %q shows the random part", s, domain.MaskSecret(s))
		}
	}
}
