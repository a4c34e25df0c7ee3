package http

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// IdempotencyStore shares Idempotency-Key entries between instances, for
// 24 hours; events.Idempotency (the bucket KEYLEDGER_IDEMPOTENCY) is one.
// Every write states the revision it replaces, so that of two instances
// only one takes an entry.
type IdempotencyStore interface {
	// Claim creates the entry name holding value; ok is false when it
	// exists already.
	Claim(ctx context.Context, name string, value []byte) (rev uint64, ok bool, err error)
	// Get returns the entry and its revision; nil when there is none.
	Get(ctx context.Context, name string) (value []byte, rev uint64, err error)
	// Replace sets the entry if it is still at rev; ok is false otherwise.
	Replace(ctx context.Context, name string, value []byte, rev uint64) (next uint64, ok bool, err error)
	// Release deletes the entry if it is still at rev.
	Release(ctx context.Context, name string, rev uint64) error
}

// A shared entry holds nothing anyone with access to NATS could use:
//
//   - its name is the hex SHA-256 of the caller (actor kind and id), the
//     method, the path and the Idempotency-Key;
//   - its value is the request body's SHA-256, the status, the headers
//     worth replaying (none holds a secret) and the answer's body — which
//     for a create or rotation holds the full key — sealed with
//     AES-256-GCM under a key derived (HKDF-SHA256) from the caller's
//     bearer credential and the entry's name. The credential is never
//     stored: only the caller can open the answer again.
//
// The first request claims the entry with a "running" marker; a retry on
// another instance meanwhile is 409. A claim older than claimLease was
// left by an instance that died: a retry takes it over and runs again.
const (
	idemEntryVersion = 1
	claimLease       = time.Minute
	idemStoreTimeout = 2 * time.Second
)

// replayedHeaders are the headers a shared answer keeps.
var replayedHeaders = []string{"Content-Type", "Location", "ETag", "X-Keyledger-Seq", "Cache-Control"}

type sharedEntry struct {
	Version   int                 `json:"v"`
	BodySum   string              `json:"body_sha256"`
	Running   bool                `json:"running,omitempty"`
	ClaimedAt int64               `json:"claimed_at,omitempty"` // Unix milliseconds
	Status    int                 `json:"status,omitempty"`
	Header    map[string][]string `json:"header,omitempty"`
	Sealed    []byte              `json:"sealed,omitempty"` // random nonce, then AES-256-GCM of the body
}

var (
	errIdemOtherCredential = domain.Errorf(domain.ECONFLICT,
		"the answer to this Idempotency-Key was sealed for another credential of this caller (a refreshed token, a key's new value): it cannot be replayed with this one")
	errIdemUnreadable = domain.Errorf(domain.ECONFLICT, "the entry of this Idempotency-Key cannot be read; use another key")
)

// idempotentShared runs a request this instance has not seen under the
// shared entry: it claims the entry and runs, or replays the answer kept
// there, or refuses. While the bucket cannot be reached it runs anyway,
// holding the Idempotency-Key on this instance only, and says so.
func (s *Server) idempotentShared(w http.ResponseWriter, r *http.Request, next http.Handler, slot, ik string, sum [sha256.Size]byte) {
	if s.Idempotency == nil {
		s.runIdempotent(w, r, next, slot, nil)
		return
	}
	cred := s.requestCredential(r)
	if cred == "" {
		s.runIdempotent(w, r, next, slot, nil) // nothing to seal it with: this instance only
		return
	}
	actor := caller(r.Context()).Actor
	sh := &shared{store: s.Idempotency, name: entryName(actor, r.Method, r.URL.Path, ik), credential: cred, sum: hex.EncodeToString(sum[:])}
	ctx, cancel := context.WithTimeout(r.Context(), idemStoreTimeout)
	rev, kept, err := sh.claim(ctx, time.Now())
	cancel()
	var refused *domain.Error
	switch {
	case errors.As(err, &refused):
		s.idem.finish(slot, answer{status: ErrorStatus(refused.Code)}) // frees the slot
		s.fail(w, r, refused)
	case err != nil:
		s.log.WarnContext(r.Context(), "idempotency bucket unreachable: this Idempotency-Key holds on this instance only", "err", err)
		s.runIdempotent(w, r, next, slot, nil)
	case kept != nil:
		s.idem.finish(slot, *kept)
		kept.replay(w)
	default:
		s.runIdempotent(w, r, next, slot, func(rec *recorder) {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), idemStoreTimeout)
			defer cancel()
			if err := sh.finish(ctx, rev, rec.answer()); err != nil {
				s.log.ErrorContext(r.Context(), "the answer to an Idempotency-Key could not be shared: a retry on another instance may run again once the claim is a minute old", "err", err)
			}
		})
	}
}

// entryName names a shared entry; it reveals none of its parts.
func entryName(a domain.Actor, method, path, ik string) string {
	parts, _ := json.Marshal([]string{"keyledger idempotency", a.Kind, a.ID, method, path, ik})
	sum := sha256.Sum256(parts)
	return hex.EncodeToString(sum[:])
}

// shared is one request's entry in the store.
type shared struct {
	store      IdempotencyStore
	name       string
	credential string
	sum        string // hex SHA-256 of the request body
}

// claim takes the entry for this request and returns its revision, or
// the answer kept there, or a *domain.Error refusing the request.
func (sh *shared) claim(ctx context.Context, now time.Time) (rev uint64, kept *answer, err error) {
	running, _ := json.Marshal(sharedEntry{Version: idemEntryVersion, BodySum: sh.sum, Running: true, ClaimedAt: now.UnixMilli()})
	for range 3 {
		rev, ok, err := sh.store.Claim(ctx, sh.name, running)
		if err != nil || ok {
			return rev, nil, err
		}
		raw, rev, err := sh.store.Get(ctx, sh.name)
		if err != nil {
			return 0, nil, err
		}
		if raw == nil {
			continue // released meanwhile: claim again
		}
		var e sharedEntry
		if json.Unmarshal(raw, &e) != nil || e.Version != idemEntryVersion {
			return 0, nil, errIdemUnreadable
		}
		switch {
		case e.BodySum != sh.sum:
			return 0, nil, errIdemOtherRequest
		case e.Running && now.Sub(time.UnixMilli(e.ClaimedAt)) < claimLease:
			return 0, nil, errIdemRunning
		case e.Running: // left by an instance that died: take it over
			next, ok, err := sh.store.Replace(ctx, sh.name, running, rev)
			if err != nil || ok {
				return next, nil, err
			}
			continue
		}
		body, err := openAnswer(sh.credential, sh.name, e.Sealed)
		if err != nil {
			return 0, nil, errIdemOtherCredential
		}
		return 0, &answer{status: e.Status, header: e.Header, body: body}, nil
	}
	return 0, nil, errIdemRunning
}

// finish keeps a 2xx answer, sealed, in place of the claim; any other
// answer releases the claim, so that a retry runs again.
func (sh *shared) finish(ctx context.Context, rev uint64, a answer) error {
	if a.status < 200 || a.status > 299 {
		return sh.store.Release(ctx, sh.name, rev)
	}
	sealed, err := sealAnswer(sh.credential, sh.name, a.body)
	if err != nil {
		return err
	}
	e := sharedEntry{Version: idemEntryVersion, BodySum: sh.sum, Status: a.status, Header: map[string][]string{}, Sealed: sealed}
	for _, k := range replayedHeaders {
		if v := a.header.Values(k); len(v) > 0 {
			e.Header[k] = v
		}
	}
	value, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, ok, err := sh.store.Replace(ctx, sh.name, value, rev); err != nil || !ok {
		return errors.Join(err, errors.New("the claim was taken over"))
	}
	return nil
}

// sealCipher is AES-256-GCM, with a random nonce before each sealed text,
// under the key HKDF-SHA256 derives from secret, salted with the entry's
// name (which is also what the seal authenticates), for purpose.
func sealCipher(secret, name, purpose string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(secret), []byte(name), purpose, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func sealWith(secret, name, purpose string, body []byte) ([]byte, error) {
	aead, err := sealCipher(secret, name, purpose)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nil, body, []byte(name)), nil
}

func openWith(secret, name, purpose string, sealed []byte) ([]byte, error) {
	aead, err := sealCipher(secret, name, purpose)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, nil, sealed, []byte(name))
}

const answerPurpose = "keyledger idempotent answer v1"

func sealAnswer(credential, name string, body []byte) ([]byte, error) {
	return sealWith(credential, name, answerPurpose, body)
}

func openAnswer(credential, name string, sealed []byte) ([]byte, error) {
	return openWith(credential, name, answerPurpose, sealed)
}

var _ IdempotencyStore = (*events.Idempotency)(nil)

// requestCredential is what authenticated the request: its bearer
// credential, or, signed in on the page, the session's cookie.
func (s *Server) requestCredential(r *http.Request) string {
	if cred, ok := bearer(r); ok {
		return cred
	}
	if c, err := r.Cookie(sessionCookie); err == nil && s.SSO != nil && r.Header.Get("Authorization") == "" {
		return "session " + c.Value
	}
	return ""
}
