package webhooks

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
)

// SecretsBucket holds the sealed signing secrets.
const SecretsBucket = "KEYLEDGER_WEBHOOK_SECRETS"

// Vault seals endpoint secrets under a key every instance shares.
type Vault struct {
	kv    jetstream.KeyValue
	kvs   jetstream.Stream // the bucket's stream, to forget without a marker
	aead  cipher.AEAD
	key   []byte
	keyID string
}

// LoadKey reads the sealing key file (32 bytes, base64), creating it with
// mode 0600 when create is set and it is missing. A key readable by
// others is refused.
func LoadKey(path string, create bool) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		// Written whole to a temporary file, then linked into place: an
		// instance starting beside this one reads all of it or none.
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.CreateTemp(filepath.Dir(path), ".webhook-secrets-*")
		if err != nil {
			return nil, err
		}
		defer os.Remove(f.Name())
		if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		if err := os.Link(f.Name(), path); err != nil {
			if errors.Is(err, os.ErrExist) {
				return LoadKey(path, false) // another instance made it first
			}
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s: the webhook secrets key may be read by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("%s: not a webhook secrets key (32 bytes in base64)", path)
	}
	return key, nil
}

// OpenVault opens (creating when missing) the secrets bucket.
func OpenVault(ctx context.Context, js jetstream.JetStream, key []byte, replicas int) (*Vault, error) {
	kv, err := js.KeyValue(ctx, SecretsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: SecretsBucket, Replicas: max(replicas, 1), MaxBytes: 64 << 20, Description: "keyledger: sealed webhook signing secrets"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, SecretsBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", SecretsBucket, err)
	}
	kvs, err := js.Stream(ctx, "KV_"+SecretsBucket)
	if err != nil {
		return nil, fmt.Errorf("key-value bucket %s: %w", SecretsBucket, err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(key)
	return &Vault{kv: kv, kvs: kvs, aead: aead, key: key, keyID: hex.EncodeToString(sum[:4])}, nil
}

// Put seals secret for endpoint id and returns its reference.
func (v *Vault) Put(ctx context.Context, id string, secret []byte) (string, error) {
	ref := "s" + ulid.Make().String()
	nonce := make([]byte, v.aead.NonceSize())
	_, _ = rand.Read(nonce)
	sealed := v.aead.Seal(nonce, nonce, secret, []byte(id+"."+ref))
	val := v.keyID + "." + base64.RawStdEncoding.EncodeToString(sealed)
	if _, err := v.kv.Create(ctx, id+"."+ref, []byte(val)); err != nil {
		return "", fmt.Errorf("seal the webhook secret: %w", err)
	}
	return ref, nil
}

// Get opens the secret ref of endpoint id.
func (v *Vault) Get(ctx context.Context, id, ref string) ([]byte, error) {
	ent, err := v.kv.Get(ctx, id+"."+ref)
	if err != nil {
		return nil, fmt.Errorf("webhook secret %s of %s: %w", ref, id, err)
	}
	keyID, b64, _ := strings.Cut(string(ent.Value()), ".")
	if keyID != v.keyID {
		return nil, fmt.Errorf("webhook secret %s of %s was sealed under another webhook secrets key (%s, this instance holds %s): every instance needs the same key file", ref, id, keyID, v.keyID)
	}
	sealed, err := base64.RawStdEncoding.DecodeString(b64)
	if err != nil || len(sealed) < v.aead.NonceSize() {
		return nil, fmt.Errorf("webhook secret %s of %s is not sealed as keyledger seals", ref, id)
	}
	n := v.aead.NonceSize()
	return v.aead.Open(nil, sealed[:n], sealed[n:], []byte(id+"."+ref))
}

// Forget removes the sealed secrets refs of endpoint id, leaving nothing
// of them in the bucket: a key-value purge would leave a marker per
// reference, and an endpoint updated and rotated without end would fill
// the bucket every org shares with them.
func (v *Vault) Forget(ctx context.Context, id string, refs ...string) {
	for _, ref := range refs {
		if ref == "" {
			continue
		}
		if err := v.kvs.Purge(ctx, jetstream.WithPurgeSubject("$KV."+SecretsBucket+"."+id+"."+ref)); err != nil {
			_ = v.kv.Purge(ctx, id+"."+ref)
		}
	}
}

// ConsumerName is the durable consumer of endpoint id: derived from the
// shared key, so that a holder of the read-only credential, who may pull
// from a consumer whose name it knows, cannot name it.
func (v *Vault) ConsumerName(id string) string {
	mac := hmac.New(sha256.New, v.key)
	mac.Write([]byte("keyledger-webhook-consumer\n" + id))
	return "wh_" + hex.EncodeToString(mac.Sum(nil)[:12])
}
