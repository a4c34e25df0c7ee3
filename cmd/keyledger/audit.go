package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
)

const auditUsage = `Usage:
  keyledger audit export --org ORG [--key ID] [--since T] [--until T] [--format jsonl|csv]
  keyledger audit as-of  --org ORG --at T [--format text|json]
  keyledger audit verify [--event-signers FILE | --pubkey-url URL] [--anchor FILE] [--save-anchor FILE]
  keyledger audit pubkey [--url URL | --key FILE | --signing-key FILE]
They read ./data while the server is stopped, or a running system with
--nats-url: the read-only credential (--nats-creds) and the deployment's
public keys are all they need. Only events a trusted signer wrote count:
--event-signers FILE (or --pubkey FILE) is the deployment's trust set,
--pubkey-url URL fetches a running instance's (GET /v1/audit/signers);
on ./data the default is the instance's own key.
`

// errTampered makes `audit verify` exit non-zero without another message.
var errTampered = errors.New("the history was altered")

func audit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return errors.New("audit needs a command")
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	a := auditFlags{}
	fs.StringVar(&a.org, "org", "", "org whose history to read")
	fs.StringVar(&a.key, "key", "", "export: only this key id; pubkey: a PEM file, a private or a public key, whose public key to print")
	fs.StringVar(&a.url, "url", "", "pubkey: a running instance's base URL, to print the public key it signs with (GET /v1/audit/pubkey)")
	fs.StringVar(&a.pubkeyURL, "pubkey-url", "", "trust the public keys a running instance serves at this base URL (GET /v1/audit/signers): check them out of band")
	fs.StringVar(&a.since, "since", "", "export: events at or after this RFC 3339 instant")
	fs.StringVar(&a.until, "until", "", "export: events before this RFC 3339 instant")
	fs.StringVar(&a.at, "at", "", "as-of: the RFC 3339 instant")
	fs.StringVar(&a.format, "format", "", "export: jsonl (default) or csv; as-of: text (default) or json")
	fs.StringVar(&a.pubkey, "pubkey", "", "a PEM file of the public keys to trust (the same as --event-signers)")
	fs.StringVar(&a.anchor, "anchor", "", "verify: fail unless the stream still holds the head saved in this file")
	fs.StringVar(&a.saveAnchor, "save-anchor", "", "verify: once intact, save the head here (keep it where the NATS credential cannot reach)")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if c.natsInbox == "" {
		c.natsInbox = events.SubscriberInbox // audits read: the subscriber credential is enough
	}
	if args[0] == "pubkey" {
		return a.printPublicKey(ctx, &c, stdout)
	}
	run, ok := map[string]func(context.Context, *events.Store, io.Writer, io.Writer) error{
		"export": a.export, "as-of": a.asOf, "verify": a.verify,
	}[args[0]]
	if !ok {
		fmt.Fprint(stderr, auditUsage)
		return fmt.Errorf("unknown audit command %q", args[0])
	}
	if err := a.check(args[0]); err != nil {
		return err
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	set, err := a.trustSet(ctx, &c, stderr)
	if err != nil {
		return err
	}
	b, err := openBackend(ctx, c, openOpts{readOnly: true, signers: set}, log)
	if err != nil {
		return err
	}
	defer b.close()
	return run(ctx, b.store, stdout, stderr)
}

type auditFlags struct {
	org, key, since, until, at, format, pubkey, anchor, saveAnchor string
	url, pubkeyURL                                                 string
}

func (a *auditFlags) check(cmd string) error {
	if cmd == "verify" {
		return nil
	}
	if err := domain.ValidateOrgID(a.org); err != nil {
		return fmt.Errorf("--org: %w", err)
	}
	if a.key != "" {
		if err := domain.ValidateKeyID(a.key); err != nil {
			return fmt.Errorf("--key: %w", err)
		}
	}
	formats := map[string][]string{"export": {"", "jsonl", "csv"}, "as-of": {"", "text", "json"}}[cmd]
	for _, f := range formats {
		if a.format == f {
			return nil
		}
	}
	return fmt.Errorf("--format %q is not one of %s", a.format, strings.Join(formats[1:], ", "))
}

// publicKey derives the public key from the signing key file, which must
// exist: an audit never creates one.
func (a *auditFlags) publicKey(c *common) (ed25519.PublicKey, error) {
	path := c.signing.keyPath(c)
	if path == "" {
		return nil, errors.New(needPublicKeys)
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no signing key at %s (give --event-signers, or --signing-key): %w", path, err)
	}
	priv, err := events.LoadOrCreateSigningKey(path)
	if err != nil {
		return nil, err
	}
	return priv.Public().(ed25519.PublicKey), nil
}

// needPublicKeys is what an audit of a running system says when it was
// given no key: public ones are all it needs.
const needPublicKeys = "with --nats-url the audit needs the deployment's public keys, never a private one: " +
	"--pubkey FILE (or --event-signers FILE: PEM public keys, as keyledger audit pubkey prints them), " +
	"or --pubkey-url URL of a running instance (its GET /v1/audit/signers); " +
	"and the read-only NATS credential, --nats-creds FILE"

// trustSet is --event-signers (or --pubkey) exactly, as an auditor pins
// it, or what --pubkey-url serves; else what serve trusts: on the
// embedded default <data-dir>/event-signers.pem when it exists, and the
// public half of the signing key.
func (a *auditFlags) trustSet(ctx context.Context, c *common, stderr io.Writer) (*events.Signers, error) {
	if c.eventSigners == "" {
		c.eventSigners = a.pubkey
	}
	if c.eventSigners != "" && a.pubkeyURL != "" {
		return nil, errors.New("give the trust set once: --event-signers (or --pubkey) FILE, or --pubkey-url URL")
	}
	if a.pubkeyURL != "" {
		raw, from, err := fetchPEM(ctx, a.pubkeyURL, "/v1/audit/signers")
		if err != nil {
			return nil, fmt.Errorf("--pubkey-url: %w", err)
		}
		set, err := events.ParseSigners(raw)
		if err != nil {
			return nil, fmt.Errorf("--pubkey-url %s: %w", from, err)
		}
		fmt.Fprintf(stderr, "trusting the signers %s serves (%s): check them out of band, or pin them with --event-signers FILE\n", from, strings.Join(set.IDs(), ", "))
		return set, nil
	}
	if c.eventSigners != "" {
		return c.signing.signers(c, nil)
	}
	pub, err := a.publicKey(c)
	if c.signing.signersPath(c) == "" {
		if err != nil {
			return nil, err
		}
		return events.NewSigners(pub), nil
	}
	set, serr := c.signing.signers(c, nil)
	if serr != nil || err != nil {
		return set, serr
	}
	return set.With(pub)
}

// printPublicKey is `audit pubkey`: the public key a running instance
// signs with (--url), or that of a key file (--key, private or public),
// or of the signing key.
func (a *auditFlags) printPublicKey(ctx context.Context, c *common, stdout io.Writer) error {
	var pub ed25519.PublicKey
	switch {
	case a.url != "" && a.key != "":
		return errors.New("audit pubkey reads one of --url or --key, not both")
	case a.url != "":
		raw, from, err := fetchPEM(ctx, a.url, "/v1/audit/pubkey")
		if err != nil {
			return fmt.Errorf("--url: %w", err)
		}
		if pub, err = parsePublicKey(raw); err != nil {
			return fmt.Errorf("--url %s: %w", from, err)
		}
	case a.key != "":
		raw, err := os.ReadFile(a.key)
		if err != nil {
			return fmt.Errorf("--key: %w", err)
		}
		if pub, err = parsePublicKey(raw); err != nil {
			return fmt.Errorf("--key %s: %w", a.key, err)
		}
	default:
		if c.signing.keyPath(c) == "" {
			return errors.New("audit pubkey needs --url URL (a running instance's public key, GET /v1/audit/pubkey), --key FILE (a private or public key PEM), or --signing-key FILE")
		}
		var err error
		if pub, err = a.publicKey(c); err != nil {
			return err
		}
	}
	_, err := stdout.Write(events.PublicKeyPEM(pub))
	return err
}

// parsePublicKey reads one Ed25519 key from PEM: a PUBLIC KEY (PKIX), or
// the public half of a PRIVATE KEY (PKCS #8).
func parsePublicKey(raw []byte) (ed25519.PublicKey, error) {
	block, rest := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("not a PEM file: want a PUBLIC KEY or PRIVATE KEY block (Ed25519)")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("holds more than one PEM block: give one key (a trust set goes to --event-signers)")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "PRIVATE KEY":
		var priv any
		if priv, err = x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if k, ok := priv.(ed25519.PrivateKey); ok {
				key = k.Public()
			}
		}
	default:
		return nil, fmt.Errorf("a %q PEM block: want PUBLIC KEY or PRIVATE KEY (Ed25519)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("not an Ed25519 key")
	}
	return pub, nil
}

// fetchPEM GETs a running instance's PEM: base is its base URL (the
// route is added) or the route's own URL. It answers the URL it read.
func fetchPEM(ctx context.Context, base, route string) ([]byte, string, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, base, fmt.Errorf("%q is not an http or https URL, such as http://127.0.0.1:8080", base)
	}
	if !strings.HasSuffix(u.Path, route) {
		u.Path = strings.TrimSuffix(u.Path, "/") + route
	}
	from := u.String()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, from, nil)
	if err != nil {
		return nil, from, err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, from, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, from, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, from, fmt.Errorf("GET %s: %s", from, res.Status)
	}
	return raw, from, nil
}

func parseInstant(flagName, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s must be an RFC 3339 instant such as 2026-11-26T10:00:00Z", flagName)
	}
	return t, nil
}

// export streams the org's events to stdout, one batch of the stream at a
// time: memory stays flat whatever the history's length.
func (a *auditFlags) export(ctx context.Context, s *events.Store, stdout, stderr io.Writer) error {
	since, err := parseInstant("since", a.since)
	if err != nil {
		return err
	}
	until, err := parseInstant("until", a.until)
	if err != nil {
		return err
	}
	filter := events.SubjectRoot + "." + a.org + ".>"
	if a.key != "" {
		filter = events.KeySubjects(a.org, a.key)
	}
	out := bufio.NewWriterSize(stdout, 64<<10)
	w := newExportWriter(a.format, out)
	var bar *progressbar.ProgressBar
	onTotal := func(total uint64) {
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			bar = progressbar.NewOptions64(int64(total), progressbar.OptionSetWriter(stderr),
				progressbar.OptionSetDescription("exporting "+a.org), progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond))
		}
	}
	skipped, err := s.EachTrusted(ctx, filter, 1, onTotal, func(e domain.Event) error {
		if bar != nil {
			_ = bar.Add(1)
		}
		if (!since.IsZero() && e.OccurredAt.Before(since)) || (!until.IsZero() && !e.OccurredAt.Before(until)) {
			return nil
		}
		return w.write(e)
	})
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "left out %d events that no trusted keyledger instance wrote: keyledger audit verify names them\n", skipped)
	}
	w.flush()
	return out.Flush()
}

// exportWriter writes events as JSON lines or CSV rows.
type exportWriter struct {
	jsonl *json.Encoder
	csv   *csv.Writer
}

// CSVHeader names the columns of a CSV export.
var CSVHeader = []string{"seq", "event_id", "type", "org_id", "key_id", "occurred_at", "actor_kind", "actor_id", "actor_name",
	"name", "scopes", "masked", "secret_hash", "expires_at", "previous_secret_expires_at", "reason", "prev_hash",
	"leak_source", "leak_url", "leak_reporter"} // columns are only ever added at the end

func newExportWriter(format string, w io.Writer) *exportWriter {
	if format == "csv" {
		c := csv.NewWriter(w)
		_ = c.Write(CSVHeader)
		return &exportWriter{csv: c}
	}
	return &exportWriter{jsonl: json.NewEncoder(w)}
}

func (x *exportWriter) write(e domain.Event) error {
	if x.jsonl != nil {
		env, err := events.ToEnvelope(e)
		if err != nil {
			return err
		}
		return x.jsonl.Encode(env)
	}
	row := []string{strconv.FormatUint(e.Seq, 10), e.ID, string(e.Type), e.OrgID, e.KeyID, events.FormatTime(e.OccurredAt),
		e.Actor.Kind, e.Actor.ID, e.Actor.Name, "", "", "", "", "", "", "", e.PrevHash, "", "", ""}
	opt := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return events.FormatTime(t)
	}
	switch d := e.Data.(type) {
	case domain.KeyCreated:
		row[9], row[10], row[11], row[12], row[13] = d.Name, strings.Join(d.Scopes, " "), d.Masked, d.SecretHash, opt(d.ExpiresAt)
	case domain.KeyRotated:
		row[11], row[12], row[14] = d.Masked, d.SecretHash, opt(d.PreviousSecretExpiresAt)
	case domain.KeyRevoked:
		row[15] = d.Reason
	case domain.KeyLeakReported:
		row[11], row[12], row[17], row[18], row[19] = d.Masked, d.SecretHash, d.Source, d.URL, d.Reporter
	case domain.WebhookCreated:
		row[9], row[11], row[18] = d.Description, d.SecretMasked, d.URLMasked
	case domain.WebhookUpdated:
		row[9], row[18] = d.Description, d.URLMasked
	case domain.WebhookSecretRotated:
		row[11], row[14] = d.SecretMasked, opt(d.PreviousExpiresAt)
	case domain.WebhookDisabled:
		row[15] = d.Reason
	}
	return x.csv.Write(row)
}

func (x *exportWriter) flush() {
	if x.csv != nil {
		x.csv.Flush()
	}
}

// asOf prints the org's keys as they stood at --at.
func (a *auditFlags) asOf(ctx context.Context, s *events.Store, stdout, _ io.Writer) error {
	at, err := parseInstant("at", a.at)
	if err != nil || at.IsZero() {
		return errors.New("as-of needs --at, an RFC 3339 instant such as 2026-11-26T10:00:00Z")
	}
	fold := projections.NewAsOf(a.org, at)
	if _, err := s.EachTrusted(ctx, events.SubjectRoot+"."+a.org+".>", 1, nil, fold.Apply); err != nil {
		return err
	}
	keys := fold.Keys()
	if a.format == "json" {
		enc := json.NewEncoder(stdout)
		for _, k := range keys {
			if err := enc.Encode(map[string]any{
				"id": k.Key.ID, "name": k.Key.Name, "masked": k.Key.Masked, "status": k.Status, "valid": k.Valid(),
				"last_changed_by": events.Actor(k.LastChangedBy), "last_changed_at": events.FormatTime(k.LastChangedAt),
			}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "keys of %s as of %s\n", a.org, events.FormatTime(at))
	fmt.Fprintln(tw, "KEY\tNAME\tMASKED\tSTATUS\tVALID\tLAST CHANGED BY\tLAST CHANGED AT")
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s:%s\t%s\n", k.Key.ID, k.Key.Name, k.Key.Masked, k.Status, k.Valid(),
			k.LastChangedBy.Kind, k.LastChangedBy.Name, events.FormatTime(k.LastChangedAt))
	}
	return tw.Flush()
}

// verify replays the stream and says where it was altered, if anywhere,
// and names every message in it that keyledger did not write.
func (a *auditFlags) verify(ctx context.Context, s *events.Store, stdout, _ io.Writer) error {
	opts := events.AuditOptions{Signers: s.Signers()}
	if a.anchor != "" {
		raw, err := os.ReadFile(a.anchor)
		if err != nil {
			return fmt.Errorf("--anchor: %w", err)
		}
		opts.Anchor = &events.Head{}
		if err := json.Unmarshal(raw, opts.Anchor); err != nil || opts.Anchor.Seq == 0 {
			return fmt.Errorf("--anchor %s: not a head saved by --save-anchor or GET /v1/audit/head", a.anchor)
		}
	}
	r, err := events.Audit(ctx, s, opts)
	if err != nil {
		return err
	}
	// A finding may quote what a forger wrote: never their control
	// characters onto the auditor's terminal.
	if r.Finding != nil {
		fmt.Fprintf(stdout, "NOT INTACT at sequence %d: %s\n", r.Finding.Seq, printable(r.Finding.Problem))
	}
	for _, f := range r.Forged {
		fmt.Fprintf(stdout, "FORGED at sequence %d: %s\n", f.Seq, printable(f.Problem))
	}
	if !r.Intact() {
		if r.Finding == nil {
			fmt.Fprintf(stdout, "the signed history is whole up to sequence %d, but the stream holds %d messages keyledger did not write (none was applied)\n", r.SignedUpTo, len(r.Forged))
		}
		return errTampered
	}
	legacy := ""
	if r.Legacy > 0 {
		legacy = fmt.Sprintf(" (%d written before signing began, vouched for by checkpoints)", r.Legacy)
	}
	fmt.Fprintf(stdout, "intact up to sequence %d: %d events%s, %d checkpoints, signed up to sequence %d by key %s\n",
		r.LastSeq, r.Events, legacy, r.Checkpoints, r.SignedUpTo, r.Head.KeyID)
	ids := make([]string, 0, len(r.Signers))
	for id := range r.Signers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		st := r.Signers[id]
		fmt.Fprintf(stdout, "  signer %s: %d events and %d checkpoints, from sequence %d to %d\n", id, st.Events, st.Checkpoints, st.First, st.Last)
	}
	if a.saveAnchor != "" {
		raw, _ := json.MarshalIndent(r.Head, "", "  ")
		if err := os.WriteFile(a.saveAnchor, append(raw, '\n'), 0o644); err != nil {
			return fmt.Errorf("--save-anchor: %w", err)
		}
		fmt.Fprintf(stdout, "anchor saved to %s: checkpoint at sequence %d, up to event %d\n", a.saveAnchor, r.Head.Seq, r.Head.ToSeq)
	}
	return nil
}

// printable writes every control character of s, and every rune that is
// not printable, as a Go escape.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRuneToASCII(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}
