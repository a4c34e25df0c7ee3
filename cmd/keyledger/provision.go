package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/webhooks"
)

const provisionUsage = `Usage: keyledger provision --signing-key FILE --event-signers FILE [--webhook-secrets-key FILE]

Makes, once, the keys a deployment's instances share, before any starts
(docker-compose.yml's keyledger-init runs it): the signing key, the trust
set naming its public key, and the key webhook secrets are sealed with.
A run after the first keeps every file as it is, so it may run before
each start. It never makes a signing key in place of a lost one: when the
trust set exists and the key does not, it refuses (restore the key from a
backup, docs/OPERATIONS.md), since a new key would sign beside a history
that nobody could tell it from.
`

// provision is `keyledger provision`.
func provision(args []string, stderr io.Writer) error {
	flags := flag.NewFlagSet("provision", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() { fmt.Fprint(stderr, provisionUsage); flags.PrintDefaults() }
	keyPath := flags.String("signing-key", "", "the signing key (mode 0600) to make if missing")
	signersPath := flags.String("event-signers", "", "the trust set file to make, with the signing key's public key, if missing")
	webhookPath := flags.String("webhook-secrets-key", "", "the webhook secrets key (mode 0600) to make if missing; none given: none made")
	if err := parse(flags, args); err != nil {
		return err
	}
	if *keyPath == "" || *signersPath == "" {
		return errors.New("provision needs --signing-key FILE and --event-signers FILE")
	}
	_, keyErr := os.Stat(*keyPath)
	signers, err := os.ReadFile(*signersPath)
	switch {
	case err == nil && errors.Is(keyErr, fs.ErrNotExist):
		return fmt.Errorf("%s is missing, but the trust set %s exists: the deployment's signing key is lost; restore it from a backup (docs/OPERATIONS.md), or, to start a new history on purpose, remove %s too", *keyPath, *signersPath, *signersPath)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--event-signers: %w", err)
	}
	priv, err := events.LoadOrCreateSigningKey(*keyPath)
	if err != nil {
		return fmt.Errorf("--signing-key: %w", err)
	}
	signer := events.NewSigner(priv)
	verb := "kept"
	if errors.Is(keyErr, fs.ErrNotExist) {
		verb = "made"
	}
	fmt.Fprintf(stderr, "%s the signing key %s (key id %s)\n", verb, *keyPath, signer.KeyID())
	if signers == nil {
		set, err := events.NewSigners().With(signer.Public())
		if err != nil {
			return err
		}
		// Readable by all, writable by its owner only: serve refuses a
		// trust set that others may write.
		if err := os.WriteFile(*signersPath, set.PEM(), 0o644); err != nil {
			return fmt.Errorf("--event-signers: %w", err)
		}
		fmt.Fprintf(stderr, "made the trust set %s: %s\n", *signersPath, signer.KeyID())
	} else {
		set, err := events.ParseSigners(signers)
		if err != nil {
			return fmt.Errorf("--event-signers %s: %w", *signersPath, err)
		}
		fmt.Fprintf(stderr, "kept the trust set %s: %s\n", *signersPath, strings.Join(set.IDs(), ", "))
	}
	if *webhookPath != "" {
		_, statErr := os.Stat(*webhookPath)
		if _, err := webhooks.LoadKey(*webhookPath, true); err != nil {
			return fmt.Errorf("--webhook-secrets-key: %w", err)
		}
		verb := "kept"
		if errors.Is(statErr, fs.ErrNotExist) {
			verb = "made"
		}
		fmt.Fprintf(stderr, "%s the webhook secrets key %s\n", verb, *webhookPath)
	}
	return nil
}

// healthcheck is `keyledger healthcheck`: exit 0 only when the instance
// at --url answers /readyz 200. It is the container's health check; the
// image has no shell, curl or wget.
func healthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	flags.SetOutput(stderr)
	url := flags.String("url", "http://127.0.0.1:8080", "the instance to ask")
	if err := parse(flags, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(*url, "/")+"/readyz", nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s %s", res.Status, strings.TrimSpace(string(body)))
	}
	_, err = stdout.Write(body)
	return err
}
