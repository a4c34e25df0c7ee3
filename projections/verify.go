package projections

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// VerifyIndex maps the SHA-256 of every secret any key ever had to that
// key, so that a revoked key's secrets answer REVOKED and a rotated-away
// secret EXPIRED rather than NOT_FOUND.
type VerifyIndex struct {
	seqMark
	mu     sync.RWMutex
	keys   map[string]*domain.Key // by org/id
	byHash map[[sha256.Size]byte]secretRef
}

type secretRef struct {
	key  *domain.Key
	hash string // the stored form, as the key's fields hold it
}

// NewVerifyIndex returns an empty index.
func NewVerifyIndex() *VerifyIndex {
	return &VerifyIndex{keys: map[string]*domain.Key{}, byHash: map[[sha256.Size]byte]secretRef{}}
}

// Apply folds one event into the index.
func (v *VerifyIndex) Apply(e domain.Event) error {
	defer v.mark(e.Seq)
	v.mu.Lock()
	defer v.mu.Unlock()
	k, err := applyKey(v.keys, e)
	if err != nil || k == nil {
		return err
	}
	var h string
	switch d := e.Data.(type) {
	case domain.KeyCreated:
		h = d.SecretHash
	case domain.KeyRotated:
		h = d.SecretHash
	default:
		return nil
	}
	if sum, ok := domain.ParseHash(h); ok {
		v.byHash[sum] = secretRef{key: k, hash: h}
	}
	return nil
}

// Result answers a verification: the verdict and, unless the secret is
// malformed or unknown, a copy of the key it belongs to.
type Result struct {
	domain.Verdict
	Key domain.Key
}

// Verify tells what secret is worth at now, without any I/O.
func (v *VerifyIndex) Verify(secret string, now time.Time) Result {
	if !domain.WellFormed(secret) {
		return Result{Verdict: domain.Verdict{Code: domain.VerifyMalformed}}
	}
	sum := sha256.Sum256([]byte(secret))
	v.mu.RLock()
	defer v.mu.RUnlock()
	ref, ok := v.byHash[sum]
	if !ok {
		return Result{Verdict: domain.Verdict{Code: domain.VerifyNotFound}}
	}
	return Result{Verdict: ref.key.Judge(ref.hash, now), Key: *ref.key}
}
