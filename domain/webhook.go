package domain

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// Webhook endpoint events: an endpoint's changes are events of the org's
// history like a key's, chained per endpoint, on the endpoint's subjects.
const (
	TypeWebhookCreated  EventType = "WebhookCreated"
	TypeWebhookDisabled EventType = "WebhookDisabled"
	TypeWebhookEnabled  EventType = "WebhookEnabled"
	TypeWebhookDeleted  EventType = "WebhookDeleted"
	TypeWebhookUpdated  EventType = "WebhookUpdated"
	// TypeWebhookSecretRotated replaces the signing secret; the previous
	// one signs beside it until its grace ends.
	TypeWebhookSecretRotated EventType = "WebhookSecretRotated"
	// TypeWebhookReplayed sends an endpoint again every event it wants
	// from an instant on.
	TypeWebhookReplayed EventType = "WebhookReplayed"
)

// IsWebhookType reports whether t is an endpoint's event, not a key's.
func IsWebhookType(t EventType) bool {
	switch t {
	case TypeWebhookCreated, TypeWebhookDisabled, TypeWebhookEnabled, TypeWebhookDeleted,
		TypeWebhookUpdated, TypeWebhookSecretRotated, TypeWebhookReplayed:
		return true
	}
	return false
}

// WebhookEventTypes are the key events an endpoint may subscribe to.
var WebhookEventTypes = []EventType{TypeKeyCreated, TypeKeyRotated, TypeKeyRevoked, TypeKeyLeakReported}

// ScopeWebhooks is the scope a management key needs, beside keys:manage,
// to manage its org's webhook endpoints: an endpoint learns of every key
// of the org, and disabling one can blind whoever watches revocations.
const ScopeWebhooks = "webhooks:manage"

const webhookIDPrefix = "wh_"

// MaxWebhooksPerOrg bounds an org's endpoints.
const MaxWebhooksPerOrg = 20

// NewWebhookID returns a fresh endpoint id.
func NewWebhookID() string { return webhookIDPrefix + ulid.Make().String() }

// ValidateWebhookID accepts "wh_" and an upper-case ULID. Returns EINVALID.
func ValidateWebhookID(id string) error {
	if rest, ok := strings.CutPrefix(id, webhookIDPrefix); ok {
		if _, err := ulid.ParseStrict(rest); err == nil && rest == strings.ToUpper(rest) {
			return nil
		}
	}
	return Errorf(EINVALID, "webhook id must be wh_ followed by an upper-case ULID")
}

// ValidateAggregateID accepts a key id or an endpoint id.
func ValidateAggregateID(id string) error {
	if strings.HasPrefix(id, webhookIDPrefix) {
		return ValidateWebhookID(id)
	}
	return ValidateKeyID(id)
}

// WebhookCreated is the data of a TypeWebhookCreated event. Neither the
// signing secret nor the URL is in it, only the references of their sealed
// copies and masked forms: the stream is read by every verifier, and a
// URL's path or query is often a bearer token (a Slack or Teams hook is).
type WebhookCreated struct {
	URLRef       string
	URLMasked    string
	Description  string
	EventTypes   []EventType // empty: all of WebhookEventTypes
	SecretRef    string
	SecretMasked string
}

// WebhookUpdated is the data of a TypeWebhookUpdated event: the endpoint's
// URL, description and subscription as they now stand.
type WebhookUpdated struct {
	URLRef      string
	URLMasked   string
	Description string
	EventTypes  []EventType
}

// WebhookSecretRotated is the data of a TypeWebhookSecretRotated event.
type WebhookSecretRotated struct {
	SecretRef    string
	SecretMasked string
	// PreviousExpiresAt is when the replaced secret stops signing; zero:
	// at once.
	PreviousExpiresAt time.Time
}

// WebhookReplayed is the data of a TypeWebhookReplayed event: deliveries
// start again with the first wanted event at or after From.
type WebhookReplayed struct{ From time.Time }

// MaxWebhookSecretGrace bounds how long a replaced signing secret signs.
const MaxWebhookSecretGrace = 7 * 24 * time.Hour

// WebhookDisabled is the data of a TypeWebhookDisabled event.
type WebhookDisabled struct{ Reason string }

// WebhookEnabled is the data of a TypeWebhookEnabled event.
type WebhookEnabled struct{}

// WebhookDeleted is the data of a TypeWebhookDeleted event.
type WebhookDeleted struct{}

// Webhook is an endpoint, built by applying its events in order.
type Webhook struct {
	ID, OrgID    string
	URLRef       string
	URLMasked    string
	Description  string
	EventTypes   []EventType
	SecretRef    string
	SecretMasked string
	// PreviousRef signs beside SecretRef until PreviousUntil.
	PreviousRef   string
	PreviousUntil time.Time
	Disabled      bool
	DisabledWhy   string
	Deleted       bool
	CreatedAt     time.Time
	CreatedBy     Actor
	// EnabledAt is when deliveries last started: its creation, or its
	// last WebhookEnabled. Failures before it do not count against it.
	EnabledAt time.Time
	// Generation counts its replays: each has its own consumer, which
	// starts at ReplayFrom (zero: just after CreatedSeq).
	Generation int
	ReplayFrom time.Time
	// CreatedSeq is the sequence of its first event: deliveries start
	// after it.
	CreatedSeq uint64
	Version    uint64
	LastHash   string
}

// Follows reports whether e may come next in w's history.
func (w *Webhook) Follows(e Event) bool {
	if e.Type == TypeWebhookCreated {
		return w.ID == "" && e.PrevHash == ""
	}
	return w.ID != "" && (w.LastHash == "" || e.PrevHash == w.LastHash)
}

// Apply evolves w by one event.
func (w *Webhook) Apply(e Event) error {
	if w.ID != "" && (e.KeyID != w.ID || e.OrgID != w.OrgID) {
		return fmt.Errorf("event %s for %s/%s applied to webhook %s/%s", e.ID, e.OrgID, e.KeyID, w.OrgID, w.ID)
	}
	if !w.Follows(e) {
		return fmt.Errorf("event %s of webhook %s does not follow its last event", e.ID, e.KeyID)
	}
	switch d := e.Data.(type) {
	case WebhookCreated:
		*w = Webhook{ID: e.KeyID, OrgID: e.OrgID, URLRef: d.URLRef, URLMasked: d.URLMasked, Description: d.Description,
			EventTypes: d.EventTypes, SecretRef: d.SecretRef, SecretMasked: d.SecretMasked,
			CreatedAt: e.OccurredAt, CreatedBy: e.Actor, CreatedSeq: e.Seq, EnabledAt: e.OccurredAt}
	case WebhookUpdated:
		w.URLRef, w.URLMasked, w.Description, w.EventTypes = d.URLRef, d.URLMasked, d.Description, d.EventTypes
	case WebhookSecretRotated:
		w.PreviousRef, w.PreviousUntil = w.SecretRef, d.PreviousExpiresAt
		w.SecretRef, w.SecretMasked = d.SecretRef, d.SecretMasked
	case WebhookReplayed:
		w.Generation++
		w.ReplayFrom = d.From
	case WebhookDisabled:
		w.Disabled, w.DisabledWhy = true, d.Reason
	case WebhookEnabled:
		w.Disabled, w.DisabledWhy, w.EnabledAt = false, "", e.OccurredAt
	case WebhookDeleted:
		w.Deleted = true
	default:
		return fmt.Errorf("event %s of type %s is no webhook endpoint's", e.ID, e.Type)
	}
	if e.Seq != 0 {
		w.Version = e.Seq
	}
	if e.Hash != "" {
		w.LastHash = e.Hash
	}
	return nil
}

// Signing returns the references of the secrets that sign at now: the
// current one, and the previous one during its grace.
func (w *Webhook) Signing(now time.Time) []string {
	if w.PreviousRef != "" && now.Before(w.PreviousUntil) {
		return []string{w.SecretRef, w.PreviousRef}
	}
	return []string{w.SecretRef}
}

// MaskWebhookURL shows where an endpoint is without what may be a token
// in its path or query: the scheme, the host and the first four
// characters of the rest.
func MaskWebhookURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "…"
	}
	rest := strings.TrimPrefix(u.RequestURI(), "/")
	if len(rest) > 4 {
		rest = rest[:4] + "…"
	}
	return u.Scheme + "://" + u.Host + "/" + rest
}

// Wants reports whether w is to be sent events of type t.
func (w *Webhook) Wants(t EventType) bool {
	return len(w.EventTypes) == 0 || slices.Contains(w.EventTypes, t)
}

// MayManageWebhooks returns nil when p may manage org's endpoints: the
// system, a person managing the org, or a key of the org holding both
// keys:manage and webhooks:manage. Returns EFORBIDDEN.
func (p Principal) MayManageWebhooks(org string) error {
	if err := p.MayManage(org); err != nil {
		return err
	}
	if p.key != nil && !p.key.HasScope(ScopeWebhooks) {
		return Errorf(EFORBIDDEN, "this key may not manage webhooks: that needs scope %s", ScopeWebhooks)
	}
	return nil
}

// ValidateWebhookURL checks an endpoint URL: absolute, https (http only
// when allowHTTP), a host, no user name or password in it, at most 2,048
// bytes. An address literal that no delivery could reach (loopback,
// private, link-local, metadata) is refused at once unless allowPrivate;
// names are checked when delivering, after they resolve.
func ValidateWebhookURL(raw string, allowHTTP, allowPrivate bool) (string, error) {
	if len(raw) > 2048 {
		return "", Errorf(EINVALID, "url must be at most 2048 bytes")
	}
	if err := printable("url", raw); err != nil {
		return "", err
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "":
		return "", Errorf(EINVALID, "url must be an absolute URL with a host")
	case u.Scheme != "https" && !(allowHTTP && u.Scheme == "http"):
		if u.Scheme == "http" {
			return "", Errorf(EINVALID, "url must be https (this instance does not allow http endpoints)")
		}
		return "", Errorf(EINVALID, "url must be https")
	case u.User != nil:
		return "", Errorf(EINVALID, "url must not hold a user name or password")
	case u.Fragment != "":
		return "", Errorf(EINVALID, "url must not have a fragment")
	}
	if ip := net.ParseIP(strings.Trim(u.Hostname(), "[]")); ip != nil {
		if why := RefusedAddress(ip, allowPrivate); why != "" {
			return "", Errorf(EINVALID, "url names a %s address, which webhooks may not reach", why)
		}
	}
	return u.String(), nil
}

var refusedNets = func() (out []struct {
	n   *net.IPNet
	why string
}) {
	for _, c := range []struct{ cidr, why string }{
		{"0.0.0.0/8", "unspecified"}, {"10.0.0.0/8", "private"}, {"100.64.0.0/10", "private (shared)"},
		{"127.0.0.0/8", "loopback"}, {"169.254.0.0/16", "link-local"}, {"172.16.0.0/12", "private"},
		{"192.0.0.0/24", "private"}, {"192.168.0.0/16", "private"}, {"198.18.0.0/15", "private"},
		{"224.0.0.0/4", "multicast"}, {"240.0.0.0/4", "reserved"},
		{"::/128", "unspecified"}, {"::1/128", "loopback"}, {"fc00::/7", "private"},
		{"fe80::/10", "link-local"}, {"ff00::/8", "multicast"}, {"64:ff9b::/96", "translated"},
		{"64:ff9b:1::/48", "translated"}, {"2002::/16", "translated"}, {"2001::/32", "translated"},
		{"::/96", "translated"},
	} {
		_, n, _ := net.ParseCIDR(c.cidr)
		out = append(out, struct {
			n   *net.IPNet
			why string
		}{n, c.why})
	}
	return out
}()

// metadataAddrs are cloud metadata and host services: refused even where
// private addresses are allowed, since no endpoint is ever there. AWS,
// Azure, Google, OpenStack and others (169.254.169.254), AWS over IPv6
// (fd00:ec2::254) and ECS tasks (169.254.170.2), Alibaba
// (100.100.100.200), Azure's WireServer (168.63.129.16, a public
// address: refused even where nothing private is allowed), Google over
// IPv6 (fd20:ce::254), Oracle (192.0.0.192) and Tencent (169.254.0.23).
var metadataAddrs = []string{"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2",
	"168.63.129.16", "fd20:ce::254", "192.0.0.192", "169.254.0.23"}

// RefusedAddress says why a delivery may not connect to ip ("" when it
// may): loopback, private, link-local, multicast and the like unless
// allowPrivate, and metadata services always.
func RefusedAddress(ip net.IP, allowPrivate bool) string {
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	for _, m := range metadataAddrs {
		if ip.Equal(net.ParseIP(m)) {
			return "metadata"
		}
	}
	for _, v4 := range embeddedIPv4(ip) {
		if why := RefusedAddress(v4, allowPrivate); why == "metadata" {
			return why
		}
	}
	if allowPrivate {
		return ""
	}
	for _, r := range refusedNets {
		if r.n.Contains(ip) {
			return r.why
		}
	}
	return ""
}

// embeddedIPv4 returns the IPv4 addresses an IPv6 address may reach
// through a translator: NAT64 (64:ff9b::/96, and every RFC 6052 layout of
// the local-use 64:ff9b:1::/48), 6to4 (2002::/16), Teredo (2001::/32: its
// server, and its client, which is stored inverted) and the deprecated
// IPv4-compatible ::/96.
func embeddedIPv4(ip net.IP) []net.IP {
	ip16 := ip.To16()
	if ip16 == nil || ip.To4() != nil {
		return nil
	}
	at := func(i ...int) net.IP { return net.IPv4(ip16[i[0]], ip16[i[1]], ip16[i[2]], ip16[i[3]]) }
	switch {
	case ip16[0] == 0x00 && ip16[1] == 0x64 && ip16[2] == 0xff && ip16[3] == 0x9b && ip16[4] == 0 && ip16[5] == 1:
		return []net.IP{at(6, 7, 9, 10), at(7, 9, 10, 11), at(9, 10, 11, 12), at(12, 13, 14, 15)}
	case ip16[0] == 0x00 && ip16[1] == 0x64 && ip16[2] == 0xff && ip16[3] == 0x9b:
		return []net.IP{at(12, 13, 14, 15)}
	case ip16[0] == 0x20 && ip16[1] == 0x02:
		return []net.IP{at(2, 3, 4, 5)}
	case ip16[0] == 0x20 && ip16[1] == 0x01 && ip16[2] == 0 && ip16[3] == 0:
		client := net.IPv4(^ip16[12], ^ip16[13], ^ip16[14], ^ip16[15])
		return []net.IP{at(4, 5, 6, 7), client}
	case slices.Equal(ip16[:12], make([]byte, 12)):
		return []net.IP{at(12, 13, 14, 15)}
	}
	return nil
}

// ValidateWebhookEventTypes checks a subscription: each a key event type,
// no repeats; empty means all.
func ValidateWebhookEventTypes(types []string) ([]EventType, error) {
	var out []EventType
	for _, t := range types {
		et := EventType(t)
		if !slices.Contains(WebhookEventTypes, et) {
			return nil, Errorf(EINVALID, "event_types: %q is not one of KeyCreated, KeyRotated, KeyRevoked, KeyLeakReported", truncate(t, 40))
		}
		if !slices.Contains(out, et) {
			out = append(out, et)
		}
	}
	return out, nil
}

// ValidateDescription checks an endpoint's description: printable, at
// most MaxNameLen characters; it may be empty.
func ValidateDescription(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", nil
	}
	if utf8.RuneCountInString(s) > MaxNameLen {
		return "", Errorf(EINVALID, "description must be at most %d characters", MaxNameLen)
	}
	return s, printable("description", s)
}
