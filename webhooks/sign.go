package webhooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// SecretPrefix starts every endpoint signing secret.
const SecretPrefix = "whsec_"

// NewSecret returns a fresh signing secret: whsec_ and 32 random bytes in
// standard base64, as the Standard Webhooks libraries read it.
func NewSecret() (secret string, raw []byte) {
	raw = make([]byte, 32)
	_, _ = rand.Read(raw)
	return SecretPrefix + base64.StdEncoding.EncodeToString(raw), raw
}

// MaskSecret shows a secret's prefix and last four characters only.
func MaskSecret(secret string) string {
	if len(secret) < len(SecretPrefix)+8 {
		return SecretPrefix + "…"
	}
	return SecretPrefix + "…" + secret[len(secret)-4:]
}

// Signature is the webhook-signature header for body sent as message id at
// Unix time ts: one "v1,<base64 HMAC-SHA256>" per secret, space-separated.
func Signature(secrets [][]byte, id string, ts int64, body []byte) string {
	var b strings.Builder
	for i, key := range secrets {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(strconv.FormatInt(ts, 10)))
		mac.Write([]byte{'.'})
		mac.Write(body)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return b.String()
}
