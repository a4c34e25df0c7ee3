package http

import (
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

func TestMaskKeys(t *testing.T) {
	key, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	body := key[len(domain.DefaultPrefix)+1:]
	masked := domain.MaskSecret(key)
	long := strings.Repeat("a", domain.KeyBodyLen)
	for _, tt := range []struct{ in, want string }{
		{"", ""},
		{"/v1/orgs/acme/keys/key_01M8DA3RKDN86A1MPSZQH5GBYS", "/v1/orgs/acme/keys/key_01M8DA3RKDN86A1MPSZQH5GBYS"},
		{strings.Repeat("a", domain.KeyBodyLen-1), strings.Repeat("a", domain.KeyBodyLen-1)},
		{long, "****aaaa"},
		{"/v1/orgs/acme/keys/" + key, "/v1/orgs/acme/keys/" + masked},
		{"/" + key + "/" + key + "?x", "/" + masked + "/" + masked + "?x"},
		{"cursor=" + key + "&k=" + body, "cursor=" + masked + "&k=****" + body[len(body)-4:]},
		{key + key, domain.DefaultPrefix + "_****" + (body + domain.DefaultPrefix)[len(body)-1:] + "_****" + body[len(body)-4:]},
	} {
		if got := maskKeys(tt.in); got != tt.want {
			t.Errorf("maskKeys(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := loggedQuery("k=c8k%5F" + body); got != "k="+masked {
		t.Errorf("an escaped underscore: %q, want %q", got, "k="+masked)
	}
}
