package domain

import (
	"context"
	"io"
	"time"
)

// Store keeps the events of keys. Implementations append with optimistic
// concurrency per key, so that no decision is taken on stale state.
type Store interface {
	// Create appends the first event of a new key and returns it with its
	// sequence. Returns ECONFLICT if the key id already has events and
	// EUNAVAILABLE when the store cannot be reached.
	Create(ctx context.Context, e Event) (Event, error)

	// Update loads the key org/id, asks fn for the events to append given
	// its current state, and appends them expecting that the key has not
	// changed since it was loaded. On a conflict it loads and asks again, a
	// bounded number of times. It returns the key with the events applied.
	// Returns ENOTFOUND, ECONFLICT (still conflicting after the retries),
	// EUNAVAILABLE, or whatever fn returns.
	Update(ctx context.Context, org, id string, fn func(*Key) ([]Event, error)) (*Key, error)
}

// KeyCounter counts the keys an org has, as a projection holds them: those
// not revoked, and all of them.
type KeyCounter interface {
	CountKeys(org string) (active, all int)
}

// Issued is a key together with a secret that exists nowhere else: it is
// shown to its caller once and then only its hash and masked form remain.
type Issued struct {
	Key    *Key
	Secret string
}

// Keys carries out the commands on keys: it mints secrets, lets the
// aggregate decide, and has the store append.
type Keys struct {
	Store     Store
	Now       func() time.Time
	Prefix    string        // DefaultPrefix when empty
	MaxExpiry time.Duration // zero: no limit
	Rand      io.Reader     // crypto/rand when nil
	// MaxPerOrg caps the keys of one org not revoked (and all of them at
	// RevokedKeysPerCap times as many), as
	// Counter counts them (MayAddKey); zero or no Counter: no cap. The
	// count is the projection's, which may lag: creates in flight at
	// once, on several instances, may pass it by as many.
	MaxPerOrg int
	Counter   KeyCounter
}

// now is the command's instant, to the microsecond, which is what the
// envelope keeps: a key built from the stream equals the one returned.
func (s *Keys) now() time.Time {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return now().UTC().Truncate(time.Microsecond)
}

func (s *Keys) secret() (string, error) {
	p := s.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	secret, err := GenerateSecret(p, s.Rand)
	if err != nil {
		return "", Wrap(EINTERNAL, err, "cannot mint a secret")
	}
	return secret, nil
}

// Create mints a key. Returns EINVALID, ECONFLICT (the org has MaxPerOrg
// keys), EUNAVAILABLE.
func (s *Keys) Create(ctx context.Context, cmd CreateKey) (Issued, error) {
	secret, err := s.secret()
	if err != nil {
		return Issued{}, err
	}
	e, err := DecideCreate(cmd, s.now(), s.MaxExpiry, secret)
	if err != nil {
		return Issued{}, err
	}
	if s.Counter != nil {
		active, all := s.Counter.CountKeys(cmd.OrgID)
		if err := MayAddKey(cmd.OrgID, active, all, s.MaxPerOrg); err != nil {
			return Issued{}, err
		}
	}
	e, err = s.Store.Create(ctx, e)
	if err != nil {
		return Issued{}, err
	}
	k, err := Rebuild([]Event{e})
	if err != nil {
		return Issued{}, Wrap(EINTERNAL, err, "cannot build the new key")
	}
	return Issued{Key: k, Secret: secret}, nil
}

// Rotate gives a key a new secret. Returns ENOTFOUND, EINVALID,
// EPRECONDITION, EKEYREVOKED, ECONFLICT, EUNAVAILABLE.
func (s *Keys) Rotate(ctx context.Context, org, id string, cmd RotateKey) (Issued, error) {
	secret, err := s.secret()
	if err != nil {
		return Issued{}, err
	}
	k, err := s.Store.Update(ctx, org, id, func(k *Key) ([]Event, error) {
		e, err := k.DecideRotate(cmd, s.now(), secret)
		return []Event{e}, err
	})
	if err != nil {
		return Issued{}, err
	}
	return Issued{Key: k, Secret: secret}, nil
}

// Revoke ends a key and every secret it ever had. Returns ENOTFOUND,
// EINVALID, EPRECONDITION, EKEYREVOKED, ECONFLICT, EUNAVAILABLE.
func (s *Keys) Revoke(ctx context.Context, org, id string, cmd RevokeKey) (*Key, error) {
	return s.Store.Update(ctx, org, id, func(k *Key) ([]Event, error) {
		e, err := k.DecideRevoke(cmd, s.now())
		return []Event{e}, err
	})
}

// HistoryUpdater is a Store that can decide on a key's whole history
// only, never on a projection's summary of it.
type HistoryUpdater interface {
	UpdateFromHistory(ctx context.Context, org, id string, fn func(*Key) ([]Event, error)) (*Key, error)
}

// LeakOutcome is what a leak report appended.
type LeakOutcome struct {
	Recorded bool // a KeyLeakReported
	Revoked  bool // a KeyRevoked
}

// ReportLeak records that a secret of key org/id leaked and, when cmd asks
// for it and the secret still opens the key, revokes the key at once. A
// repeated report appends nothing. Returns ENOTFOUND, EINVALID,
// EFORBIDDEN, ECONFLICT, EUNAVAILABLE.
func (s *Keys) ReportLeak(ctx context.Context, org, id string, cmd ReportLeak) (LeakOutcome, error) {
	update := s.Store.Update
	if h, ok := s.Store.(HistoryUpdater); ok {
		update = h.UpdateFromHistory // a key's leaks are in its history only
	}
	var out LeakOutcome
	_, err := update(ctx, org, id, func(k *Key) ([]Event, error) {
		evs, err := k.DecideLeak(cmd, s.now())
		out = LeakOutcome{}
		for _, e := range evs {
			out.Recorded = out.Recorded || e.Type == TypeKeyLeakReported
			out.Revoked = out.Revoked || e.Type == TypeKeyRevoked
		}
		return evs, err
	})
	if err != nil {
		return LeakOutcome{}, err
	}
	return out, nil
}
