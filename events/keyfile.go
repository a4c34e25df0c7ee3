package events

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// LoadOrCreateSigningKey reads an Ed25519 private key (PKCS #8 PEM) from
// path, creating it with mode 0600 when missing. A key file its group or
// anyone else may read is refused, as ssh refuses such a key: whoever can
// read it can sign in keyledger's name.
func LoadOrCreateSigningKey(path string) (ed25519.PrivateKey, error) {
	if err := privateFile(path); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, fs.ErrExist) {
			// Another instance sharing the key file made it first.
			time.Sleep(100 * time.Millisecond)
			return LoadOrCreateSigningKey(path)
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
			return nil, err
		}
		return priv, f.Close()
	}
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return priv, nil
}

// privateFile refuses a file that exists and that its group or others may
// read or write, saying how to fix it.
func privateFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return nil // missing: created 0600; unreadable: reading says why
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		abs, _ := filepath.Abs(path)
		return fmt.Errorf("%s may be read by others (mode %04o): a signing key must be private to its owner; run: chmod 600 %s", path, perm, abs)
	}
	return nil
}

// PublicKeyPEM writes pub as a PKIX PEM block.
func PublicKeyPEM(pub ed25519.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// ParsePublicKeyPEM reads what PublicKeyPEM wrote.
func ParsePublicKeyPEM(raw []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 public key")
	}
	return pub, nil
}
