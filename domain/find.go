package domain

import "bytes"

// KeyPattern is the regular expression of a key as secret scanners see it:
// a prefix of 1 to 20 lower-case letters or digits, "_", and 49 base62
// characters (43 random, then the checksum), not inside a longer word.
// It matches strings whose checksum is wrong too: WellFormed (or the
// checks in docs/secret-scanning/) tells those apart.
const KeyPattern = `(?:^|[^0-9A-Za-z])([a-z0-9]{1,20}_[0-9A-Za-z]{49})(?:$|[^0-9A-Za-z])`

// FindKeys calls found with the offset of every key in b: a string of the
// key format, whose checksum holds, not inside a longer word (the byte
// before it and the byte after it are not letters or digits). It looks
// only at the underscores of b, so it reads text about as fast as memory.
func FindKeys(b []byte, found func(at int, key string)) {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '_')
		if j < 0 {
			return
		}
		us := i + j
		i = us + 1
		start := us
		for start > 0 && us-start < maxPrefixLen && charClass[b[start-1]]&1 != 0 {
			start--
		}
		end := us + 1 + KeyBodyLen
		if start == us || end > len(b) || (start > 0 && alnum(b[start-1])) || (end < len(b) && alnum(b[end])) {
			continue
		}
		if key := string(b[start:end]); WellFormed(key) {
			found(start, key)
			i = end
		}
	}
}

func alnum(c byte) bool { return charClass[c]&2 != 0 }
