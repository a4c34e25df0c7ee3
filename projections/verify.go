package projections

import (
	"crypto/sha256"
	"time"
	"unsafe"

	"github.com/keyledger/keyledger/domain"
)

// VerifyIndex maps the SHA-256 of every secret a key has or remembers
// (domain.MaxReplacedSecrets, domain.ReplacedSecretMemory) to that key, so
// that a revoked key's secrets answer REVOKED and a rotated-away secret
// EXPIRED rather than NOT_FOUND. It is a view of a Table.
type VerifyIndex struct{ t *Table }

// NewVerifyIndex returns an empty index on a table of its own.
func NewVerifyIndex() *VerifyIndex { return NewTable().Index() }

// Apply folds one event into the index's table.
func (v *VerifyIndex) Apply(e domain.Event) error { return v.t.Apply(e) }

// LastSeq returns the last sequence the table applied.
func (v *VerifyIndex) LastSeq() uint64 { return v.t.LastSeq() }

// Table returns the table the index is a view of.
func (v *VerifyIndex) Table() *Table { return v.t }

// Result answers a verification: the verdict and, unless the secret is
// malformed or unknown, the key it belongs to, without its hashes. The
// key's strings and scopes are shared with the index: do not change them.
type Result struct {
	domain.Verdict
	Key domain.Key
}

// Verify tells what secret is worth at now, without any I/O.
func (v *VerifyIndex) Verify(secret string, now time.Time) Result {
	if !domain.WellFormed(secret) {
		return Result{Verdict: domain.Verdict{Code: domain.VerifyMalformed}}
	}
	// Hash the string's bytes in place: Sum256 only reads them.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(secret), len(secret)))
	t := v.t
	t.mu.RLock()
	defer t.mu.RUnlock()
	slot, ok := t.lookup(sum)
	var m domain.SecretMatch
	if ok {
		m, ok = t.match(slot, sum, now)
	}
	if !ok {
		return Result{Verdict: domain.Verdict{Code: domain.VerifyNotFound}}
	}
	k := t.key(slot, false)
	verdict := k.JudgeMatch(m, now)
	if verdict.Code == domain.VerifyNotFound {
		return Result{Verdict: verdict} // a secret the key forgot: it tells nothing of the key
	}
	return Result{Verdict: verdict, Key: k}
}
