package domain

import (
	"net"
	"strings"
	"testing"
)

func TestValidateWebhookURL(t *testing.T) {
	for _, c := range []struct {
		url           string
		http, private bool
		want          string // "" accepted, else part of the error
	}{
		{url: "https://hooks.example.com/keyledger"},
		{url: "https://hooks.example.com:8443/a?b=c"},
		{url: "http://hooks.example.com/", want: "must be https"},
		{url: "http://hooks.example.com/", http: true},
		{url: "ftp://hooks.example.com/", want: "must be https"},
		{url: "/relative", want: "absolute"},
		{url: "https://", want: "absolute"},
		{url: "https://user:pw@hooks.example.com/", want: "user name or password"},
		{url: "https://hooks.example.com/#frag", want: "fragment"},
		{url: "https://127.0.0.1/", want: "loopback"},
		{url: "https://127.0.0.1/", private: true},
		{url: "https://[::1]:8080/", want: "loopback"},
		{url: "https://10.1.2.3/", want: "private"},
		{url: "https://192.168.1.1/", want: "private"},
		{url: "https://169.254.169.254/latest/meta-data", want: "metadata"},
		{url: "https://169.254.169.254/latest/meta-data", private: true, want: "metadata"},
		{url: "https://[::ffff:127.0.0.1]/", want: "loopback"},
		{url: "https://hooks.example.com/\x7f", want: "control"},
		{url: "https://h.example.com/" + strings.Repeat("a", 2048), want: "2048"},
	} {
		_, err := ValidateWebhookURL(c.url, c.http, c.private)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: refused: %v", c.url, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: got %v, want an error with %q", c.url, err, c.want)
		}
	}
}

func TestRefusedAddress(t *testing.T) {
	for ip, want := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "10.0.0.1": "private", "172.16.5.4": "private",
		"192.168.0.1": "private", "100.64.0.1": "private (shared)", "169.254.1.1": "link-local",
		"fe80::1": "link-local", "fd12::1": "private", "0.0.0.0": "unspecified", "::": "unspecified",
		"224.0.0.1": "multicast", "::ffff:10.0.0.1": "private", "64:ff9b::7f00:1": "translated",
		"169.254.169.254": "metadata", "fd00:ec2::254": "metadata",
		"93.184.216.34": "", "2606:2800:220:1::": "",
	} {
		if got := RefusedAddress(net.ParseIP(ip), false); got != want {
			t.Errorf("%s: %q, want %q", ip, got, want)
		}
	}
	if got := RefusedAddress(net.ParseIP("127.0.0.1"), true); got != "" {
		t.Errorf("allowed private, loopback: %q", got)
	}
	if got := RefusedAddress(net.ParseIP("169.254.169.254"), true); got != "metadata" {
		t.Errorf("allowed private, metadata: %q", got)
	}
	// A translator reaches the IPv4 address inside: the metadata service
	// stays refused however it is spelt (found by the red team: NAT64 and
	// 6to4 forms passed with private addresses allowed, and the local-use
	// NAT64 prefix passed even without).
	for _, ip := range []string{
		"64:ff9b::a9fe:a9fe",       // NAT64, well-known prefix
		"64:ff9b:1:a9fe:a9:fe00::", // local-use NAT64, /48 layout
		"64:ff9b:1::a9fe:a9fe",     // local-use NAT64, /96 layout
		"2002:a9fe:a9fe::1",        // 6to4
		"2001:0:a9fe:a9fe::1",      // Teredo server
		"2001:0:1:2:3:4:5601:5601", // Teredo client (stored inverted)
		"::a9fe:a9fe",              // IPv4-compatible
		"::ffff:169.254.169.254",   // IPv4-mapped
	} {
		if got := RefusedAddress(net.ParseIP(ip), true); got != "metadata" {
			t.Errorf("allowed private, %s: %q, want metadata", ip, got)
		}
		if got := RefusedAddress(net.ParseIP(ip), false); got == "" {
			t.Errorf("%s: allowed", ip)
		}
	}
	if got := RefusedAddress(net.ParseIP("64:ff9b:1::1"), false); got != "translated" {
		t.Errorf("local-use NAT64: %q, want translated", got)
	}
}

func TestMayManageWebhooks(t *testing.T) {
	manage := KeyPrincipal(Key{ID: "key_a", OrgID: "acme", Scopes: []string{ScopeManage}})
	both := KeyPrincipal(Key{ID: "key_b", OrgID: "acme", Scopes: []string{ScopeManage, ScopeWebhooks}})
	onlyHooks := KeyPrincipal(Key{ID: "key_c", OrgID: "acme", Scopes: []string{ScopeWebhooks}})
	person := PersonPrincipal("u", "U", map[string]string{"acme": RoleManager})
	member := PersonPrincipal("u", "U", map[string]string{"acme": "member"})
	for name, c := range map[string]struct {
		p  Principal
		ok bool
	}{
		"keys:manage alone": {manage, false}, "both scopes": {both, true}, "webhooks:manage alone": {onlyHooks, false},
		"manager": {person, true}, "member": {member, false}, "system": {SystemPrincipal("s", "s"), true},
	} {
		if err := c.p.MayManageWebhooks("acme"); (err == nil) != c.ok {
			t.Errorf("%s: %v", name, err)
		}
	}
	if both.MayManageWebhooks("other") == nil {
		t.Error("a key of acme manages another org's webhooks")
	}
}
