package domain

import (
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Limits of the rules below.
const (
	MaxNameLen     = 100
	MaxReasonLen   = 500
	MaxScopes      = 32
	MaxGracePeriod = 7 * 24 * time.Hour
	// ScopeManage lets a key manage the keys of its own org.
	ScopeManage = "keys:manage"
	keyIDPrefix = "key_"
)

var (
	orgRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	scopeRE = regexp.MustCompile(`^[a-z][a-z0-9:._-]{0,63}$`)
)

// ValidateOrgID accepts ^[a-z0-9][a-z0-9-]{0,62}$ only, so that no `.`, `*`,
// `>` or space can reach a NATS subject. Returns EINVALID.
func ValidateOrgID(org string) error {
	if !orgRE.MatchString(org) {
		return Errorf(EINVALID, "org id must match ^[a-z0-9][a-z0-9-]{0,62}$")
	}
	return nil
}

// ValidateKeyID accepts "key_" and an upper-case ULID. Returns EINVALID.
func ValidateKeyID(id string) error {
	rest, ok := strings.CutPrefix(id, keyIDPrefix)
	if ok {
		if _, err := ulid.ParseStrict(rest); err == nil && rest == strings.ToUpper(rest) {
			return nil
		}
	}
	return Errorf(EINVALID, "key id must be key_ followed by an upper-case ULID")
}

// NewKeyID returns a fresh key id.
func NewKeyID() string { return keyIDPrefix + ulid.Make().String() }

// NewEventID returns a fresh event id.
func NewEventID() string { return ulid.Make().String() }

// ValidateName trims name and checks it: 1 to 100 characters, no control
// characters. Returns the trimmed name or EINVALID.
func ValidateName(name string) (string, error) {
	name = strings.TrimSpace(name)
	n := utf8.RuneCountInString(name)
	if n == 0 || n > MaxNameLen {
		return "", Errorf(EINVALID, "name must be 1 to %d characters", MaxNameLen)
	}
	if err := printable("name", name); err != nil {
		return "", err
	}
	return name, nil
}

func printable(field, s string) error {
	if !utf8.ValidString(s) {
		return Errorf(EINVALID, "%s must be valid UTF-8", field)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return Errorf(EINVALID, "%s must not contain control characters", field)
	}
	return nil
}

// ValidateScopes checks each scope against ^[a-z][a-z0-9:._-]{0,63}$, at most
// 32 of them, and drops repeats. Returns EINVALID.
func ValidateScopes(scopes []string) ([]string, error) {
	out := make([]string, 0, min(len(scopes), MaxScopes))
	for _, s := range scopes {
		if !scopeRE.MatchString(s) {
			return nil, Errorf(EINVALID, "scope %q must match ^[a-z][a-z0-9:._-]{0,63}$", truncate(s, 70))
		}
		if slices.Contains(out, s) {
			continue
		}
		if len(out) == MaxScopes {
			return nil, Errorf(EINVALID, "at most %d scopes", MaxScopes)
		}
		out = append(out, s)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// CreateKey asks for a new key.
type CreateKey struct {
	OrgID     string
	Name      string
	Scopes    []string
	ExpiresAt time.Time // zero: never
	// By asks: it must manage the org and hold what it grants (MayGrant).
	By Principal
}

// RotateKey asks for a new secret for a key.
type RotateKey struct {
	// GracePeriod keeps the replaced secret valid for this long; zero ends
	// it at once, the right answer for a leaked key.
	GracePeriod time.Duration
	// IfVersion, when not zero, must equal the key's version (If-Match).
	IfVersion uint64
	// By asks: it must be allowed to act on the key (MayActOn).
	By Principal
}

// GracePeriodSeconds turns a grace period given in whole seconds into a
// RotateKey.GracePeriod: 0 to MaxGracePeriod, checked before the
// conversion, so that no count of seconds can wrap around into a valid
// Duration. Returns EINVALID.
func GracePeriodSeconds(n int64) (time.Duration, error) {
	if n < 0 || n > int64(MaxGracePeriod/time.Second) {
		return 0, graceError()
	}
	return time.Duration(n) * time.Second, nil
}

func graceError() error {
	return Errorf(EINVALID, "grace_period_seconds must be 0 to %d", int(MaxGracePeriod/time.Second))
}

// RevokeKey asks for a key to stop working, every secret of it, for good.
type RevokeKey struct {
	Reason    string
	IfVersion uint64
	// By asks: it must be allowed to act on the key (MayActOn).
	By Principal
}

// RevokedKeysPerCap is how many keys, revoked ones included, an org may
// have ever held for each key its cap lets it hold at once.
const RevokedKeysPerCap = 10

// MayAddKey returns nil while an org that holds active keys not revoked
// (and all keys in all, revoked ones included) may have one more under a
// cap of most (0: no cap). The cap counts the keys not revoked, so that
// revoking always makes room: a stolen management key that fills the org
// cannot lock its managers out once its keys are revoked. Revoked keys
// still hold memory in every instance and every verifier (their secrets
// answer REVOKED), so all keys ever are capped too, at RevokedKeysPerCap
// times as many. Returns ECONFLICT, naming the limit.
func MayAddKey(org string, active, all, most int) error {
	switch {
	case most <= 0:
		return nil
	case active >= most:
		return Errorf(ECONFLICT, "org %s has %d keys not revoked, the most an org may have is %d: revoke some first", org, active, most)
	case all >= RevokedKeysPerCap*most:
		return Errorf(ECONFLICT, "org %s has had %d keys, revoked ones included, the most an org may have had is %d (%d times the %d it may have at once); an operator may raise --max-keys-per-org", org, all, RevokedKeysPerCap*most, RevokedKeysPerCap, most)
	}
	return nil
}

// DecideCreate validates cmd and returns the KeyCreated event of a new key
// holding secret. Returns EINVALID, EFORBIDDEN.
func DecideCreate(cmd CreateKey, now time.Time, maxExpiry time.Duration, secret string) (Event, error) {
	if err := ValidateOrgID(cmd.OrgID); err != nil {
		return Event{}, err
	}
	if err := cmd.By.MayManage(cmd.OrgID); err != nil {
		return Event{}, err
	}
	name, err := ValidateName(cmd.Name)
	if err != nil {
		return Event{}, err
	}
	scopes, err := ValidateScopes(cmd.Scopes)
	if err != nil {
		return Event{}, err
	}
	if err := cmd.By.MayGrant(scopes); err != nil {
		return Event{}, err
	}
	// The envelope keeps microseconds: judge the instant that will be kept.
	expires := cmd.ExpiresAt.UTC().Truncate(time.Microsecond)
	if err := cmd.By.MayHoldUntil(expires); err != nil {
		return Event{}, err
	}
	if !expires.IsZero() {
		if !expires.After(now) {
			return Event{}, Errorf(EINVALID, "expires_at must be in the future")
		}
		if maxExpiry > 0 && expires.After(now.Add(maxExpiry)) {
			return Event{}, Errorf(EINVALID, "expires_at must be at most %s ahead", maxExpiry)
		}
	}
	return Event{
		ID: NewEventID(), Type: TypeKeyCreated, SchemaVersion: SchemaVersion,
		OrgID: cmd.OrgID, KeyID: NewKeyID(), OccurredAt: now, Actor: cmd.By.Actor,
		Data: KeyCreated{
			Name: name, Scopes: scopes, SecretHash: HashSecret(secret),
			Masked: MaskSecret(secret), ExpiresAt: expires,
		},
	}, nil
}

// DecideRotate returns the KeyRotated event that gives k the new secret.
// Returns EFORBIDDEN when cmd.By may not act on k, EPRECONDITION when
// IfVersion is stale, EKEYREVOKED for a revoked key, ECONFLICT for an
// expired one and EINVALID for a bad grace period.
func (k *Key) DecideRotate(cmd RotateKey, now time.Time, secret string) (Event, error) {
	if err := cmd.By.MayActOn(k); err != nil {
		return Event{}, err
	}
	if err := cmd.By.MayHoldUntil(k.ExpiresAt); err != nil {
		return Event{}, err
	}
	if err := k.precondition(cmd.IfVersion); err != nil {
		return Event{}, err
	}
	if cmd.GracePeriod < 0 || cmd.GracePeriod > MaxGracePeriod {
		return Event{}, graceError()
	}
	switch k.Status(now) {
	case StatusRevoked:
		return Event{}, Errorf(EKEYREVOKED, "key is revoked")
	case StatusExpired:
		return Event{}, Errorf(ECONFLICT, "key has expired")
	}
	var prevEnd time.Time
	if cmd.GracePeriod > 0 {
		prevEnd = now.Add(cmd.GracePeriod).Truncate(time.Microsecond)
	}
	return k.event(TypeKeyRotated, now, cmd.By.Actor, KeyRotated{
		SecretHash: HashSecret(secret), Masked: MaskSecret(secret), PreviousSecretExpiresAt: prevEnd,
	}), nil
}

// DecideRevoke returns the KeyRevoked event. Returns EFORBIDDEN when
// cmd.By may not act on k, EPRECONDITION when IfVersion is stale,
// EKEYREVOKED when k is already revoked and EINVALID for a bad reason.
func (k *Key) DecideRevoke(cmd RevokeKey, now time.Time) (Event, error) {
	if err := cmd.By.MayActOn(k); err != nil {
		return Event{}, err
	}
	if err := k.precondition(cmd.IfVersion); err != nil {
		return Event{}, err
	}
	if k.Revoked {
		return Event{}, Errorf(EKEYREVOKED, "key is already revoked")
	}
	reason := strings.TrimSpace(cmd.Reason)
	if utf8.RuneCountInString(reason) > MaxReasonLen {
		return Event{}, Errorf(EINVALID, "reason must be at most %d characters", MaxReasonLen)
	}
	if err := printable("reason", reason); err != nil {
		return Event{}, err
	}
	return k.event(TypeKeyRevoked, now, cmd.By.Actor, KeyRevoked{Reason: reason}), nil
}

func (k *Key) precondition(ifVersion uint64) error {
	if ifVersion != 0 && ifVersion != k.Version {
		return Errorf(EPRECONDITION, "key has changed since version %d (now %d)", ifVersion, k.Version)
	}
	return nil
}

func (k *Key) event(t EventType, now time.Time, actor Actor, data any) Event {
	return Event{
		ID: NewEventID(), Type: t, SchemaVersion: SchemaVersion,
		OrgID: k.OrgID, KeyID: k.ID, OccurredAt: now, Actor: actor, Data: data,
	}
}
