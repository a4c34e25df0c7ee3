package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/backup"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
)

const backupUsage = `Usage:
  keyledger backup  --out FILE [--without-keys]
  keyledger restore --in FILE
with the store's flags: --data-dir DIR (the embedded store, stopped), or
--nats-url URL --nats-creds FILE (the service credential) for a running
system or a cluster; and where the keys are: --signing-key FILE,
--event-signers FILE, --webhook-secrets-key FILE (on --data-dir, the
defaults in it).
The backup holds the stream KEYLEDGER, the buckets worth keeping and,
unless --without-keys, the private signing key and the webhook secrets
key: it is written mode 0600; keep it as you keep those keys.
A restore goes only into an empty system, and checks the whole file
before it changes anything. See docs/OPERATORS.md, Backup and restore.
`

// backupFlags are the flags of backup and restore.
type backupFlags struct {
	common
	file        string
	withoutKeys bool
	webhookKey  string
}

func (f *backupFlags) register(fs *flag.FlagSet, fileFlag, fileHelp string) {
	f.common.register(fs)
	fs.StringVar(&f.file, fileFlag, "", fileHelp)
	fs.StringVar(&f.webhookKey, "webhook-secrets-key", "", "the webhook secrets key file (default <data-dir>/webhook-secrets.key on the embedded store)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), backupUsage); fs.PrintDefaults() }
}

// keyFiles are where each key of a backup is, or goes: "" for none.
func (f *backupFlags) keyFiles() map[string]string {
	webhookKey := f.webhookKey
	if webhookKey == "" && f.natsURL == "" {
		webhookKey = filepath.Join(f.dataDir, "webhook-secrets.key")
	}
	signers := f.eventSigners
	if signers == "" && f.natsURL == "" {
		signers = filepath.Join(f.dataDir, "event-signers.pem")
	}
	return map[string]string{
		backup.SigningKey:        f.signing.keyPath(&f.common),
		backup.EventSigners:      signers,
		backup.WebhookSecretsKey: webhookKey,
	}
}

// keyFlag names the flag that says where a key is.
var keyFlag = map[string]string{
	backup.SigningKey: "--signing-key", backup.EventSigners: "--event-signers", backup.WebhookSecretsKey: "--webhook-secrets-key",
}

// keyRoles are the keys in the order they are told of.
var keyRoles = []string{backup.SigningKey, backup.EventSigners, backup.WebhookSecretsKey}

func backupCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f backupFlags
	f.register(fs, "out", "write the backup to this file (mode 0600; replaced whole if it exists)")
	fs.BoolVar(&f.withoutKeys, "without-keys", false, "leave the key files out: the backup then holds no secret, and a restore needs the keys from elsewhere")
	if err := parse(fs, args); err != nil {
		return err
	}
	if f.file == "" {
		fmt.Fprint(stderr, backupUsage)
		return usageError("backup needs --out FILE")
	}
	var keys []backup.Key
	if !f.withoutKeys {
		paths := f.keyFiles()
		for _, role := range keyRoles {
			path := paths[role]
			if path == "" {
				if role == backup.SigningKey {
					fmt.Fprintf(stderr, "keyledger: the backup holds no signing key: give --signing-key FILE to put it in\n")
				}
				continue
			}
			data, err := os.ReadFile(path)
			if errors.Is(err, os.ErrNotExist) && (f.natsURL == "" || role == backup.SigningKey && f.signingKey == "" && f.auditKey == "") {
				continue // a default that was never made: nothing to keep
			}
			if err != nil {
				return fmt.Errorf("%s: %w", keyFlag[role], err)
			}
			keys = append(keys, backup.Key{Role: role, Data: data})
		}
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	nc, octx, closeFn, err := storeConn(ctx, &f.common, log)
	if err != nil {
		return err
	}
	defer closeFn()
	start := time.Now()
	last := start
	progress := func(s backup.StreamEntry) {
		fmt.Fprintf(stdout, "  %-28s %9d messages, last sequence %d, %d replica(s), %d bytes, %s\n", s.Name, s.Messages, s.LastSeq, s.Replicas, s.Size, time.Since(last).Round(time.Millisecond))
		last = time.Now()
	}
	m, err := backup.Write(octx, nc, f.file, backup.Options{KeyledgerVersion: buildVersion(), Keys: keys, Progress: progress})
	if err != nil {
		return withCause(octx, err)
	}
	fmt.Fprintf(stdout, "backup %s written in %s\n", f.file, time.Since(start).Round(time.Millisecond))
	if len(m.Keys) == 0 {
		fmt.Fprintln(stdout, "  no key files")
		return nil
	}
	var roles []string
	for _, k := range m.Keys {
		roles = append(roles, k.Role)
	}
	fmt.Fprintf(stdout, "  key files: %s — the file holds private keys: keep it as you keep them\n", strings.Join(roles, ", "))
	return nil
}

func restoreCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f backupFlags
	f.register(fs, "in", "the backup file to restore")
	sources, err := parseSources(fs, args)
	if err != nil {
		return err
	}
	if f.file == "" {
		fmt.Fprint(stderr, backupUsage)
		return usageError("restore needs --in FILE")
	}
	// The whole file is checked, and every key's place, before anything
	// is changed.
	a, err := backup.Open(f.file)
	if err != nil {
		return fmt.Errorf("%w; nothing was restored", err)
	}
	paths := f.keyFiles()
	write, err := keysToWrite(a, paths, stderr)
	if err != nil {
		return err
	}
	replicas := 0 // as they were
	if f.natsURL == "" {
		replicas = 1 // the embedded server is one node
	} else if sources["stream-replicas"] != fromDefault {
		replicas = f.replicas
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	nc, octx, closeFn, err := storeConn(ctx, &f.common, log)
	if err != nil {
		return err
	}
	defer closeFn()
	start := time.Now()
	last := start
	progress := func(s backup.StreamEntry) {
		fmt.Fprintf(stdout, "  %-28s %9d messages, last sequence %d, %s\n", s.Name, s.Messages, s.LastSeq, time.Since(last).Round(time.Millisecond))
		last = time.Now()
	}
	if err := a.Restore(octx, nc, backup.RestoreOptions{Replicas: replicas, Progress: progress}); err != nil {
		return fmt.Errorf("%w; nothing was restored", withCause(octx, err))
	}
	took := time.Since(start)
	for _, k := range write {
		mode := os.FileMode(0o600)
		if k.Role == backup.EventSigners {
			mode = 0o644
		}
		if err := writeWhole(paths[k.Role], k.Data, mode, false); err != nil {
			return fmt.Errorf("the streams are restored, but %s: %w", keyFlag[k.Role], err)
		}
	}
	m := a.Manifest
	fmt.Fprintf(stdout, "restored %s (taken %s by keyledger %s) in %s\n", f.file, m.CreatedAt.Format(time.RFC3339), m.KeyledgerVersion, took.Round(time.Millisecond))
	for _, k := range write {
		fmt.Fprintf(stdout, "  %s written to %s\n", k.Role, paths[k.Role])
	}
	return nil
}

// keysToWrite are the backup's keys that have a place and are not there
// yet; a place holding another key is an error: a restore never
// replaces a key.
func keysToWrite(a *backup.Archive, paths map[string]string, stderr io.Writer) ([]backup.Key, error) {
	var write []backup.Key
	for _, role := range keyRoles {
		data := a.Key(role)
		if data == nil {
			continue
		}
		path := paths[role]
		if path == "" {
			fmt.Fprintf(stderr, "keyledger: the backup holds the %s; not written: give %s FILE to write it\n", role, keyFlag[role])
			continue
		}
		have, err := os.ReadFile(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			write = append(write, backup.Key{Role: role, Data: data})
		case err != nil:
			return nil, fmt.Errorf("%s: %w", keyFlag[role], err)
		case !bytes.Equal(have, data):
			return nil, fmt.Errorf("%s %s exists and is not the backup's %s: a restore never replaces a key; move it away, or name another file", keyFlag[role], path, role)
		}
	}
	return write, nil
}

// storeConn connects to --nats-url, or starts the embedded server on
// --data-dir while no keyledger runs there (holding its lock), and opens
// nothing on it: a restore needs the streams absent. The context it
// returns ends when NATS refuses a request for want of permission.
func storeConn(ctx context.Context, c *common, log *slog.Logger) (*nats.Conn, context.Context, func(), error) {
	if err := c.checkReplicas(); err != nil {
		return nil, nil, nil, err
	}
	var nc *nats.Conn
	var closeFn func()
	if c.natsURL != "" {
		opts, err := c.natsOptions()
		if err != nil {
			return nil, nil, nil, err
		}
		if nc, err = events.Connect(c.natsURL, opts...); err != nil {
			if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) {
				err = fmt.Errorf("%w: NATS refused the credential; backup and restore need the service credential (--nats-creds FILE)", err)
			}
			return nil, nil, nil, err
		}
		closeFn = func() { _ = events.DrainConn(nc, 10*time.Second) }
	} else {
		if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
			return nil, nil, nil, fmt.Errorf("data directory: %w", err)
		}
		unlock, err := lockDir(c.dataDir)
		if err != nil {
			return nil, nil, nil, err
		}
		// No sync per write: a restore writes every message again, and
		// synced one by one 100,000 events take minutes. Nothing is
		// acknowledged to anyone meanwhile; the files are synced on close.
		emb, err := natsembed.Start(natsembed.Config{Dir: c.dataDir, Fsync: false, Logger: log})
		if err != nil {
			unlock()
			return nil, nil, nil, err
		}
		nc, closeFn = emb.Conn, func() {
			emb.Close()
			if err := syncTree(filepath.Join(c.dataDir, "jetstream")); err != nil {
				log.Error("sync the store's files", "err", err)
			}
			unlock()
		}
	}
	octx, cancel := context.WithCancelCause(ctx)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			cancel(fmt.Errorf("%w: backup and restore need the service credential (--nats-creds FILE), not the read-only one", err))
		}
	})
	return nc, octx, func() { cancel(nil); closeFn() }, nil
}

// withCause names why ctx ended, when it ended err.
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w (%v)", err, cause)
	}
	return err
}

// syncTree syncs every file and directory under root to disk.
func syncTree(root string) error {
	return filepath.WalkDir(root, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
