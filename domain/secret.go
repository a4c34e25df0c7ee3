package domain

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"regexp"
	"unsafe"
)

// Base62 is the alphabet of a key's random part and checksum, in this order.
const Base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const (
	// DefaultPrefix is the prefix of keys minted without configuration.
	DefaultPrefix = "c8k"
	randomLen     = 43 // 43 × log2(62) ≈ 256 bits
	checksumLen   = 6  // 62^6 > 2^32
	maxPrefixLen  = 20
	hashPrefix    = "sha256:"
)

// KeyBodyLen is how many base62 characters follow a key's "_": its random
// part and its checksum.
const KeyBodyLen = randomLen + checksumLen

var prefixRE = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// ValidatePrefix reports whether p can prefix keys: lower-case letters and
// digits, 1 to 20 of them. Returns EINVALID.
func ValidatePrefix(p string) error {
	if !prefixRE.MatchString(p) {
		return Errorf(EINVALID, "key prefix must be 1 to %d lower-case letters or digits", maxPrefixLen)
	}
	return nil
}

// GenerateSecret mints a full key `<prefix>_<random><checksum>`, drawing the
// random part uniformly from Base62 with rejection sampling over r (use
// crypto/rand.Reader; nil means that).
func GenerateSecret(prefix string, r io.Reader) (string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return "", err
	}
	if r == nil {
		r = rand.Reader
	}
	buf := make([]byte, 0, len(prefix)+1+randomLen+checksumLen)
	buf = append(buf, prefix...)
	buf = append(buf, '_')
	var pool [64]byte
	for n := 0; n < randomLen; {
		if _, err := io.ReadFull(r, pool[:]); err != nil {
			return "", fmt.Errorf("read random: %w", err)
		}
		for _, b := range pool {
			// 248 = 4×62: bytes at or above it would favour the first 8 symbols.
			if b >= 248 {
				continue
			}
			buf = append(buf, Base62[b%62])
			if n++; n == randomLen {
				break
			}
		}
	}
	buf = appendChecksum(buf, crc32.ChecksumIEEE(buf))
	return string(buf), nil
}

func appendChecksum(dst []byte, sum uint32) []byte {
	var c [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		c[i] = Base62[sum%62]
		sum /= 62
	}
	return append(dst, c[:]...)
}

// charClass marks the bytes a key may hold: 1 for a prefix (a-z, 0-9), 2
// for the random part and checksum (base62). A table: this is the first
// step of every verification.
var charClass = func() (t [256]uint8) {
	for c := '0'; c <= '9'; c++ {
		t[c] = 1 | 2
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 1 | 2
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = 2
	}
	return t
}()

// WellFormed reports whether s has the shape of a key and a matching
// checksum. A string that is not well formed is MALFORMED without a look-up.
func WellFormed(s string) bool {
	us := -1
	for i := 0; i < len(s) && i <= maxPrefixLen; i++ {
		if s[i] == '_' {
			us = i
			break
		}
		if charClass[s[i]]&1 == 0 {
			return false
		}
	}
	if us < 1 || len(s)-us-1 != randomLen+checksumLen {
		return false
	}
	for i := us + 1; i < len(s); i++ {
		if charClass[s[i]]&2 == 0 {
			return false
		}
	}
	body := len(s) - checksumLen
	// The checksum reads the string's bytes in place, without a copy.
	sum := crc32.ChecksumIEEE(unsafe.Slice(unsafe.StringData(s), body))
	for i := len(s) - 1; i >= body; i-- {
		if s[i] != Base62[sum%62] {
			return false
		}
		sum /= 62
	}
	return sum == 0
}

// HashSecret returns the stored form of a secret: "sha256:" and the hex of
// its SHA-256.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return FormatHash(sum)
}

// FormatHash writes a digest in the stored form.
func FormatHash(sum [sha256.Size]byte) string {
	return hashPrefix + hex.EncodeToString(sum[:])
}

// ParseHash reads the stored form of a secret's hash back into a digest.
func ParseHash(s string) (sum [sha256.Size]byte, ok bool) {
	if len(s) != len(hashPrefix)+2*sha256.Size || s[:len(hashPrefix)] != hashPrefix {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(s[len(hashPrefix):])); err != nil {
		return sum, false
	}
	return sum, true
}

// MaskSecret returns the only form of a secret that is shown after creation:
// its prefix, "_****" and its last four characters.
func MaskSecret(secret string) string {
	prefix := secret
	for i := 0; i < len(secret); i++ {
		if secret[i] == '_' {
			prefix = secret[:i]
			break
		}
	}
	tail := secret
	if len(tail) > 4 {
		tail = tail[len(tail)-4:]
	}
	return prefix + "_****" + tail
}
