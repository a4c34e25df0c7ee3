package domain

import (
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
)

// Webhook endpoint events: an endpoint's changes are events of the org's
// history like a key's, chained per endpoint, on the endpoint's subjects.
const (
	TypeWebhookCreated  EventType = "WebhookCreated"
	TypeWebhookDisabled EventType = "WebhookDisabled"
	TypeWebhookEnabled  EventType = "WebhookEnabled"
	TypeWebhookDeleted  EventType = "WebhookDeleted"
)

// IsWebhookType reports whether t is an endpoint's event, not a key's.
func IsWebhookType(t EventType) bool {
	switch t {
	case TypeWebhookCreated, TypeWebhookDisabled, TypeWebhookEnabled, TypeWebhookDeleted:
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

// WebhookCreated is the data of a TypeWebhookCreated event. The signing
// secret is not in it: only the reference of its sealed copy and a masked
// form.
type WebhookCreated struct {
	URL          string
	Description  string
	EventTypes   []EventType // empty: all of WebhookEventTypes
	SecretRef    string
	SecretMasked string
}

// WebhookDisabled is the data of a TypeWebhookDisabled event.
type WebhookDisabled struct{ Reason string }

// WebhookEnabled is the data of a TypeWebhookEnabled event.
type WebhookEnabled struct{}

// WebhookDeleted is the data of a TypeWebhookDeleted event.
type WebhookDeleted struct{}

// Webhook is an endpoint, built by applying its events in order.
type Webhook struct {
	ID, OrgID    string
	URL          string
	Description  string
	EventTypes   []EventType
	SecretRef    string
	SecretMasked string
	Disabled     bool
	DisabledWhy  string
	Deleted      bool
	CreatedAt    time.Time
	CreatedBy    Actor
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
		*w = Webhook{ID: e.KeyID, OrgID: e.OrgID, URL: d.URL, Description: d.Description,
			EventTypes: d.EventTypes, SecretRef: d.SecretRef, SecretMasked: d.SecretMasked,
			CreatedAt: e.OccurredAt, CreatedBy: e.Actor, CreatedSeq: e.Seq}
	case WebhookDisabled:
		w.Disabled, w.DisabledWhy = true, d.Reason
	case WebhookEnabled:
		w.Disabled, w.DisabledWhy = false, ""
	case WebhookDeleted:
		w.Deleted = true
	}
	if e.Seq != 0 {
		w.Version = e.Seq
	}
	if e.Hash != "" {
		w.LastHash = e.Hash
	}
	return nil
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
		{"2002::/16", "translated"},
	} {
		_, n, _ := net.ParseCIDR(c.cidr)
		out = append(out, struct {
			n   *net.IPNet
			why string
		}{n, c.why})
	}
	return out
}()

// metadataAddrs are cloud metadata services: refused even where private
// addresses are allowed, since no endpoint is ever there.
var metadataAddrs = []string{"169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2"}

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
	return ValidateName(s)
}
