package domain

import (
	"fmt"
	"slices"
	"time"
)

// Status is what a key is at an instant.
type Status string

// Key statuses.
const (
	StatusActive  Status = "active"
	StatusRevoked Status = "revoked"
	StatusExpired Status = "expired"
)

// Key is the aggregate: the state of one API key, built only by applying
// its events in order (Apply). Commands on it (Rotate, Revoke) decide events
// and never change it.
type Key struct {
	ID         string
	OrgID      string
	Name       string
	Scopes     []string
	SecretHash string
	Masked     string
	ExpiresAt  time.Time // zero: never

	// PreviousSecretHash is the secret replaced by the last rotation; it
	// verifies until PreviousExpiresAt.
	PreviousSecretHash string
	PreviousExpiresAt  time.Time
	// Retired are the secrets replaced before the previous one, most
	// recently replaced first: only as many as a key remembers
	// (MaxReplacedSecrets, the previous one included).
	Retired []RetiredSecret

	CreatedAt time.Time
	CreatedBy Actor
	RotatedAt time.Time
	RevokedAt time.Time
	Revoked   bool

	// Leaks are the leak reports of the key, oldest first. Only a key
	// rebuilt from its history (Rebuild) knows them, not the projections.
	Leaks []Leak
	// LastLeak is the latest leak report, which the projections keep too:
	// nil when none.
	LastLeak *Leak

	// Version is the stream sequence of the last event applied, and
	// LastHash its stored hash (set when events are read back): the next
	// event's expected sequence and prev_hash.
	Version  uint64
	LastHash string
}

// Apply evolves k by one event. It fails only on an event that cannot
// belong to this key, which means a corrupt stream. Types it does not know
// advance the version and change nothing else.
func (k *Key) Apply(e Event) error {
	if k.ID != "" && (e.KeyID != k.ID || e.OrgID != k.OrgID) {
		return fmt.Errorf("event %s for %s/%s applied to key %s/%s", e.ID, e.OrgID, e.KeyID, k.OrgID, k.ID)
	}
	if !k.Follows(e) {
		return fmt.Errorf("event %s of key %s does not follow the key's last event: a copy, or out of place", e.ID, e.KeyID)
	}
	switch d := e.Data.(type) {
	case KeyCreated:
		if k.ID != "" {
			return fmt.Errorf("event %s: key %s created twice", e.ID, e.KeyID)
		}
		*k = Key{
			ID: e.KeyID, OrgID: e.OrgID, Name: d.Name, Scopes: d.Scopes,
			SecretHash: d.SecretHash, Masked: d.Masked, ExpiresAt: d.ExpiresAt,
			CreatedAt: e.OccurredAt, CreatedBy: e.Actor,
		}
	case KeyRotated:
		if k.ID == "" {
			return fmt.Errorf("event %s: key %s rotated before it was created", e.ID, e.KeyID)
		}
		k.retire()
		k.PreviousSecretHash, k.PreviousExpiresAt = k.SecretHash, d.PreviousSecretExpiresAt
		k.SecretHash, k.Masked = d.SecretHash, d.Masked
		k.RotatedAt = e.OccurredAt
	case KeyRevoked:
		if k.ID == "" {
			return fmt.Errorf("event %s: key %s revoked before it was created", e.ID, e.KeyID)
		}
		k.Revoked, k.RevokedAt = true, e.OccurredAt
	case KeyLeakReported:
		if k.ID == "" {
			return fmt.Errorf("event %s: a leak of key %s reported before it was created", e.ID, e.KeyID)
		}
		k.Leaks = append(slices.Clip(k.Leaks), Leak{SecretHash: d.SecretHash, URL: d.URL, At: e.OccurredAt})
		k.LastLeak = &k.Leaks[len(k.Leaks)-1]
	}
	if e.Seq != 0 {
		k.Version = e.Seq
	}
	if e.Hash != "" {
		k.LastHash = e.Hash
	}
	return nil
}

// What a key remembers of the secrets it had. A remembered secret answers
// EXPIRED (REVOKED once the key is revoked); a forgotten one answers
// NOT_FOUND, like a secret no key ever had. However often a key is
// rotated, it holds a bounded number of hashes, and a client still sending
// a replaced value is told why for a quarter. The secret a key has now is
// never forgotten: a revoked key's last secret answers REVOKED for ever.
const (
	// MaxReplacedSecrets is how many of its most recently replaced
	// secrets a key remembers, the previous one included.
	MaxReplacedSecrets = 16
	// ReplacedSecretMemory is how long after it was replaced a secret is
	// remembered.
	ReplacedSecretMemory = 90 * 24 * time.Hour
)

// RetiredSecret is a secret a key had before its previous one.
type RetiredSecret struct {
	Hash       string
	ReplacedAt time.Time
}

// RemembersReplaced reports whether a secret replaced at replacedAt, with
// newer secrets replaced after it (0 for the one the last rotation
// replaced), is still remembered at now.
func RemembersReplaced(newer int, replacedAt, now time.Time) bool {
	return newer < MaxReplacedSecrets && now.Before(replacedAt.Add(ReplacedSecretMemory))
}

// retire moves the previous secret, replaced at the last rotation, in
// front of the retired ones, and forgets those beyond MaxReplacedSecrets.
// The list is made anew, never changed in place: keys built from a
// projection may share it.
func (k *Key) retire() {
	if k.PreviousSecretHash == "" {
		return
	}
	keep := min(len(k.Retired), MaxReplacedSecrets-2)
	retired := make([]RetiredSecret, 0, keep+1)
	retired = append(retired, RetiredSecret{Hash: k.PreviousSecretHash, ReplacedAt: k.RotatedAt})
	k.Retired = append(retired, k.Retired[:keep]...)
}

// Follows reports whether e may be the next event of k's history: the
// creation of a key not created yet, or an event whose prev_hash names
// k's last event (when k knows it: events read back). A key's history is
// a chain; an event out of it — such as a genuine, signed event published
// again by someone who can write to the stream — belongs to no history,
// however valid its signature.
func (k *Key) Follows(e Event) bool {
	if e.Type == TypeKeyCreated {
		return k.ID == "" && e.PrevHash == ""
	}
	return k.ID == "" || k.LastHash == "" || e.PrevHash == k.LastHash
}

// Status returns what k is at now.
func (k *Key) Status(now time.Time) Status {
	switch {
	case k.Revoked:
		return StatusRevoked
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

// HasScope reports whether k holds scope.
func (k *Key) HasScope(scope string) bool {
	for _, s := range k.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// Verify codes, part of the public contract.
const (
	VerifyValid     = "VALID"
	VerifyMalformed = "MALFORMED"
	VerifyNotFound  = "NOT_FOUND"
	VerifyRevoked   = "REVOKED"
	VerifyExpired   = "EXPIRED"
)

// Verdict is the answer about one secret of a key at one instant.
type Verdict struct {
	Code       string
	Deprecated bool      // a replaced secret still in its grace period
	ExpiresAt  time.Time // when this secret stops verifying; zero: never
}

// Valid reports whether the secret may be used.
func (v Verdict) Valid() bool { return v.Code == VerifyValid }

// SecretMatch says which of a key's secrets a presented one is.
type SecretMatch uint8

// The secrets of a key.
const (
	// OlderSecret is one the key had before its previous one, and still
	// remembers (RemembersReplaced).
	OlderSecret    SecretMatch = iota
	CurrentSecret              // the key's secret now
	PreviousSecret             // the one its last rotation replaced
)

// Judge tells what the secret with the given hash is worth to k at now. A
// revoked key refuses every secret it remembers with REVOKED; a secret
// replaced by a rotation lives until its grace period ends, then answers
// EXPIRED while the key remembers it, and NOT_FOUND once it is forgotten
// (MaxReplacedSecrets, ReplacedSecretMemory), as a secret k never had.
func (k *Key) Judge(secretHash string, now time.Time) Verdict {
	switch {
	case secretHash == "":
	case secretHash == k.SecretHash:
		return k.JudgeMatch(CurrentSecret, now)
	case secretHash == k.PreviousSecretHash:
		return k.JudgeMatch(PreviousSecret, now)
	}
	for i, old := range k.Retired {
		if old.Hash == secretHash && RemembersReplaced(i+1, old.ReplacedAt, now) {
			return k.JudgeMatch(OlderSecret, now)
		}
	}
	return Verdict{Code: VerifyNotFound}
}

// JudgeMatch is Judge for a secret already matched to one of k's secrets,
// for callers that hold the hashes in another form: an OlderSecret must be
// one that RemembersReplaced.
func (k *Key) JudgeMatch(m SecretMatch, now time.Time) Verdict {
	switch {
	case m == PreviousSecret && !RemembersReplaced(0, k.RotatedAt, now):
		return Verdict{Code: VerifyNotFound}
	case k.Revoked:
		return Verdict{Code: VerifyRevoked}
	case k.Status(now) == StatusExpired:
		return Verdict{Code: VerifyExpired, ExpiresAt: k.ExpiresAt}
	case m == CurrentSecret:
		return Verdict{Code: VerifyValid, ExpiresAt: k.ExpiresAt}
	case m == PreviousSecret && now.Before(k.PreviousExpiresAt):
		exp := k.PreviousExpiresAt
		if !k.ExpiresAt.IsZero() && k.ExpiresAt.Before(exp) {
			exp = k.ExpiresAt
		}
		return Verdict{Code: VerifyValid, Deprecated: true, ExpiresAt: exp}
	}
	return Verdict{Code: VerifyExpired}
}

// Rebuild folds events, oldest first, into a key.
func Rebuild(events []Event) (*Key, error) {
	k := &Key{}
	for _, e := range events {
		if err := k.Apply(e); err != nil {
			return nil, err
		}
	}
	if k.ID == "" {
		return nil, Errorf(ENOTFOUND, "key not found")
	}
	return k, nil
}

// Leak is one leak report of a key.
type Leak struct {
	SecretHash string
	URL        string
	At         time.Time
}
