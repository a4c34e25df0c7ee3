package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/keyledger/keyledger/domain"
)

// bootstrap mints an org's first management key and prints it once: the
// key on stdout, everything else on stderr, so that it can be captured.
func bootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	org := fs.String("org", "", "org whose first management key to mint (required)")
	name := fs.String("name", "", "descriptive name of the key (required)")
	scopes := fs.String("scopes", domain.ScopeManage, "comma-separated scopes of the key")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *org == "" || *name == "" {
		return errors.New("bootstrap needs --org and --name")
	}
	if err := domain.ValidatePrefix(c.keyPrefix); err != nil {
		return fmt.Errorf("--key-prefix: %w", err)
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	if err := c.checkReplicas(); err != nil {
		return err
	}
	signer, err := c.signing.signer(&c)
	if err != nil {
		return err
	}
	b, err := openBackend(ctx, c, openOpts{signer: signer}, log)
	if err != nil {
		return err
	}
	defer b.close()
	keys := &domain.Keys{Store: b.store, Prefix: c.keyPrefix}
	issued, err := keys.Create(ctx, domain.CreateKey{
		OrgID: *org, Name: *name, Scopes: strings.Split(*scopes, ","),
		By: domain.SystemPrincipal("bootstrap", "keyledger bootstrap"),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "Created key %s (%s) for org %s with scopes %s.\nIt is printed below once and cannot be shown again: store it now.\n",
		issued.Key.ID, issued.Key.Masked, issued.Key.OrgID, strings.Join(issued.Key.Scopes, ","))
	fmt.Fprintln(stdout, issued.Secret)
	return nil
}
