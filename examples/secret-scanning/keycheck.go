// Package keycheck tells a keyledger key from a string that only looks like
// one, in a few lines a secret scanner can copy: the key format is a prefix
// of 1 to 20 lower-case letters or digits, "_", 43 random base62
// characters and a 6-character base62 checksum, the CRC-32 (IEEE) of
// everything before it, most significant digit first.
package keycheck

import "hash/crc32"

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Valid reports whether s is a key whose checksum holds.
func Valid(s string) bool {
	us := -1
	for i := 0; i < len(s); i++ {
		if s[i] == '_' {
			us = i
			break
		}
		if !('a' <= s[i] && s[i] <= 'z' || '0' <= s[i] && s[i] <= '9') {
			return false
		}
	}
	if us < 1 || us > 20 || len(s) != us+1+49 {
		return false
	}
	for i := us + 1; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	sum := crc32.ChecksumIEEE([]byte(s[:len(s)-6]))
	for i := len(s) - 1; i >= len(s)-6; i-- {
		if s[i] != base62[sum%62] {
			return false
		}
		sum /= 62
	}
	return sum == 0
}
