package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/keyledger/keyledger/events"
)

// signing are the flags that say which key an instance signs with and
// which keys' signatures it trusts.
type signing struct {
	signingKey   string
	auditKey     string // the former name of --signing-key
	eventSigners string
}

func (s *signing) register(fs *flag.FlagSet) {
	fs.StringVar(&s.signingKey, "signing-key", "", "Ed25519 key (PKCS #8 PEM, mode 0600) this instance signs its events and checkpoints with, created if missing; default <data-dir>/audit-signing-key.pem, required with --nats-url")
	fs.StringVar(&s.auditKey, "audit-key", "", "the former name of --signing-key")
	fs.StringVar(&s.eventSigners, "event-signers", "", "PEM file of the public keys whose events this instance trusts (every instance's of the deployment); its own key is always trusted; default <data-dir>/event-signers.pem when it exists")
}

// signersPath is --event-signers, else, on the embedded default, the data
// directory's event-signers.pem when there is one: a single instance can
// then take on a new key, by writing that file and a SIGHUP, with no
// restart and no flag.
func (s *signing) signersPath(c *common) string {
	if s.eventSigners != "" || c.natsURL != "" {
		return s.eventSigners
	}
	path := filepath.Join(c.dataDir, "event-signers.pem")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return ""
}

// keyPath is the signing key file: --signing-key, else --audit-key, else
// the embedded default's; "" with --nats-url and none given.
func (s *signing) keyPath(c *common) string {
	switch {
	case s.signingKey != "":
		return s.signingKey
	case s.auditKey != "":
		return s.auditKey
	case c.natsURL == "":
		return filepath.Join(c.dataDir, "audit-signing-key.pem")
	}
	return ""
}

// noUnsigned says why there is no unsigned deployment to opt into: the
// signatures are what every reader judges the history by.
const noUnsigned = "keyledger has no unsigned mode (no --signing-key=none): every instance, verifier and audit refuses an unsigned event as forged, so an instance without a key could add nothing to the history"

// signer loads the signing key, creating it when missing.
func (s *signing) signer(c *common) (*events.Signer, error) {
	path := s.keyPath(c)
	switch path {
	case "":
		return nil, errors.New("--nats-url needs --signing-key FILE (its former name: --audit-key FILE): the Ed25519 key this instance signs its events, checkpoints and snapshots with, created mode 0600 if missing (keyledger keygen FILE makes one ahead); list every instance's public key (keyledger audit pubkey) in --event-signers. " + noUnsigned)
	case "none":
		return nil, errors.New("--signing-key none: " + noUnsigned + "; give --signing-key FILE")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	priv, err := events.LoadOrCreateSigningKey(path)
	if err != nil {
		return nil, fmt.Errorf("--signing-key: %w", err)
	}
	return events.NewSigner(priv), nil
}

// signers reads the trust set (none: an empty set) and adds own, when
// not nil: an instance always trusts its own key.
func (s *signing) signers(c *common, own *events.Signer) (*events.Signers, error) {
	set := events.NewSigners()
	path := s.signersPath(c)
	if path != "" {
		// Whoever may write the trust set may add a key to it, whose events
		// then count: refused, as ssh refuses such an authorized_keys.
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o022 != 0 {
			abs, _ := filepath.Abs(path)
			return nil, fmt.Errorf("--event-signers %s may be written by others (mode %04o): whoever may write it decides whose events count; run: chmod 644 %s", path, fi.Mode().Perm(), abs)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--event-signers: %w", err)
		}
		if set, err = events.ParseSigners(raw); err != nil {
			return nil, fmt.Errorf("--event-signers %s: %w", path, err)
		}
	}
	if own == nil {
		return set, nil
	}
	set, err := set.With(own.Public())
	if err != nil {
		return nil, fmt.Errorf("--event-signers %s: %w", path, err)
	}
	return set, nil
}

// logTrust says, once, whom the instance trusts.
func logTrust(log *slog.Logger, signer *events.Signer, set *events.Signers) {
	log.Info("signing events and checkpoints", "key_id", signer.KeyID(), "trusted_signers", set.IDs())
}

// keygen is `keyledger keygen FILE`: a new signing key, mode 0600, and its
// public half on stdout, for a trust set.
func keygen(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "Usage: keyledger keygen FILE   (writes a new Ed25519 signing key, mode 0600; prints its public key)")
		return errors.New("keygen needs the file to write")
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(args[0], os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: keygen never overwrites a key", args[0])
	}
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	_, err = stdout.Write(events.PublicKeyPEM(priv.Public().(ed25519.PublicKey)))
	return err
}
