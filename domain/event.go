package domain

import (
	"slices"
	"time"
)

// EventType names what happened to a key.
type EventType string

// The event types of schema version 1. Consumers ignore types they do not know.
const (
	TypeKeyCreated EventType = "KeyCreated"
	TypeKeyRotated EventType = "KeyRotated"
	TypeKeyRevoked EventType = "KeyRevoked"
	// TypeKeyLeakReported records that a secret of the key was found where
	// it should not be (by a secret scanner, or a person); a revocation,
	// when there is one, is a KeyRevoked of its own that follows it.
	TypeKeyLeakReported EventType = "KeyLeakReported"
)

// SchemaVersion is the envelope version this code writes.
const SchemaVersion = 1

// Actor kinds: who asked for a change.
const (
	ActorKey    = "key"
	ActorUser   = "user"
	ActorSystem = "system"
)

// Actor is the credential or person on whose behalf an event was appended.
type Actor struct {
	Kind string
	ID   string
	Name string
}

// Event is one change to one key. Data is KeyCreated, KeyRotated or
// KeyRevoked, or nil for a type this code does not know.
type Event struct {
	ID            string
	Type          EventType
	SchemaVersion int
	OrgID         string
	KeyID         string
	OccurredAt    time.Time
	Actor         Actor
	Data          any
	// PrevHash is the SHA-256 (hex) of the key's previous event as stored;
	// empty for a key's first event. It makes each key's history a chain.
	PrevHash string
	// Seq is the stream sequence and Hash the SHA-256 (hex) of the event as
	// stored, both set when an event is read back.
	Seq  uint64
	Hash string
	// Trusted, set when an event is read back, says that a keyledger
	// instance decided it: a trusted signer signed it, or a signed
	// checkpoint vouches for it. Anything else in the stream was put there
	// by someone else, and is never applied nor shown as history.
	Trusted bool
}

// KeyCreated is the data of a TypeKeyCreated event.
type KeyCreated struct {
	Name       string
	Scopes     []string
	SecretHash string
	Masked     string
	ExpiresAt  time.Time // zero: never
}

// KeyRotated is the data of a TypeKeyRotated event.
type KeyRotated struct {
	SecretHash string
	Masked     string
	// PreviousSecretExpiresAt ends the replaced secret; zero means at once.
	PreviousSecretExpiresAt time.Time
}

// KeyRevoked is the data of a TypeKeyRevoked event.
type KeyRevoked struct {
	Reason string
}

// KeyLeakReported is the data of a TypeKeyLeakReported event: which of the
// key's secrets leaked (its hash and masked form, never the secret), where
// it was found and who said so.
type KeyLeakReported struct {
	SecretHash string
	Masked     string
	Source     string // where the scanner looked: "content", "commit", "issue", …; may be empty
	URL        string // where the secret was found; may be empty
	Reporter   string // who reported it: "github", or the actor's own name
}

// EventFilter selects events; its zero value selects all.
type EventFilter struct {
	Types   []EventType
	KeyID   string
	ActorID string
	Since   time.Time // occurred at or after
	Until   time.Time // occurred before
}

// Match reports whether e is selected.
func (f EventFilter) Match(e Event) bool {
	return (len(f.Types) == 0 || slices.Contains(f.Types, e.Type)) &&
		(f.KeyID == "" || e.KeyID == f.KeyID) &&
		(f.ActorID == "" || e.Actor.ID == f.ActorID) &&
		(f.Since.IsZero() || !e.OccurredAt.Before(f.Since)) &&
		(f.Until.IsZero() || e.OccurredAt.Before(f.Until))
}

// EventQuery selects a page of events: those after the stream sequence
// After that Filter selects, at most Limit of them, having examined at
// most Budget events in all (0: no budget). A reader answers with the
// page, the last sequence it examined (After when none), and whether more
// may follow, so that a caller goes on from there: a filter that matches
// little never costs one answer the whole history.
type EventQuery struct {
	After  uint64
	Limit  int
	Budget int
	Filter EventFilter
}
