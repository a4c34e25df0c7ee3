package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/keyledger/keyledger/http/apiclient"
)

// Exit codes of the commands that talk to a server (documented in the
// docs/MANAGERS.md): 0 ok, 1 failed, 2 usage, 3 not found, 4 forbidden or
// unauthenticated.
const (
	exitFailed    = 1
	exitUsage     = 2
	exitNotFound  = 3
	exitForbidden = 4
)

// exitError is an error with the exit code it calls for.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// remote is what every command that talks to a server shares.
type remote struct {
	server, org, output, token string
	profile                    string
	client                     *apiclient.ClientWithResponses
	stdout, stderr             io.Writer
}

func (c *remote) flags(fs *flag.FlagSet, withOrg bool) {
	fs.StringVar(&c.server, "server", os.Getenv("KEYLEDGER_SERVER"), "the keyledger server (KEYLEDGER_SERVER; else the profile's; else http://127.0.0.1:8080)")
	fs.StringVar(&c.profile, "profile", envOr("KEYLEDGER_PROFILE", "default"), "the profile keyledger login made (KEYLEDGER_PROFILE)")
	if withOrg {
		fs.StringVar(&c.org, "org", os.Getenv("KEYLEDGER_ORG"), "the org (KEYLEDGER_ORG)")
	}
	fs.StringVar(&c.output, "output", "table", "table, json or yaml")
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// connect checks the flags and makes the client. The credential comes
// from KEYLEDGER_TOKEN (a management key or a manager's token, for CI),
// else from the profile keyledger login made, whose server and org are
// also the defaults.
func (c *remote) connect(needOrg bool) error {
	switch c.output {
	case "table", "json", "yaml":
	default:
		return usageError("--output must be table, json or yaml")
	}
	all, path, err := loadProfiles()
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	p := all.Profiles[c.profile]
	if c.server == "" {
		c.server = p.Server
	}
	if c.server == "" {
		c.server = "http://127.0.0.1:8080"
	}
	if c.org == "" {
		c.org = p.Org
	}
	if needOrg && c.org == "" {
		return usageError("--org (or KEYLEDGER_ORG, or a profile's) is needed")
	}
	c.token = os.Getenv("KEYLEDGER_TOKEN")
	if c.token == "" && strings.TrimRight(p.Server, "/") == strings.TrimRight(c.server, "/") {
		// Only to the server it was given for; an ID token renewed first.
		if c.token, err = renewed(context.Background(), c.profile, all, path); err != nil {
			return &exitError{code: exitForbidden, err: err}
		}
	}
	client, err := apiclient.NewClientWithResponses(strings.TrimRight(c.server, "/"),
		// No redirect is followed: the credential must reach only the
		// server it was given for.
		apiclient.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}),
		apiclient.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
			if c.token != "" && r.Header.Get("Authorization") == "" {
				r.Header.Set("Authorization", "Bearer "+c.token)
			}
			r.Header.Set("User-Agent", "keyledger-cli/"+buildVersion())
			return nil
		}))
	if err != nil {
		return usageError("--server: %v", err)
	}
	c.client = client
	return nil
}

// unreachable is the error of a request that got no answer.
func unreachable(err error) error {
	return &exitError{code: exitFailed, err: fmt.Errorf("the server cannot be reached: %w", err)}
}

// answer turns a server's answer into an error with its exit code, or nil
// for a 2xx.
func answer(res *http.Response, body []byte, err error) error {
	if err != nil {
		return &exitError{code: exitFailed, err: err}
	}
	if res.StatusCode/100 == 2 {
		return nil
	}
	var e apiclient.Error
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
		msg = string(e.Error.Code) + ": " + e.Error.Message
	}
	code := exitFailed
	switch res.StatusCode {
	case http.StatusNotFound:
		code = exitNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		code = exitForbidden
	}
	return &exitError{code: code, err: fmt.Errorf("%s (%d)", msg, res.StatusCode)}
}

// print shows v (a server's JSON) as --output asks: table through the
// given function, else the JSON itself, indented, or as YAML.
func (c *remote) print(raw []byte, table func(w *tabwriter.Writer)) error {
	switch c.output {
	case "json":
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := c.stdout.Write(buf.Bytes())
		return err
	case "yaml":
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			return err
		}
		out, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = c.stdout.Write(out)
		return err
	}
	w := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	table(w)
	return w.Flush()
}

func ts(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func keyRow(w io.Writer, k apiclient.Key) {
	status := string(k.Status)
	if k.Leak != nil {
		status += " (leaked)"
	}
	scopes := strings.Join(k.Scopes, ",")
	if scopes == "" {
		scopes = "-"
	}
	// Everything a server says is escaped before it reaches a terminal.
	fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", printable(k.Id), printable(k.Name), printable(k.Masked), printable(status), printable(scopes), ts(&k.CreatedAt), ts(k.LastUsedAt))
}

const keyHeader = "ID\tNAME\tKEY\tSTATUS\tSCOPES\tCREATED\tLAST USED\n"

// keysCmd runs `keyledger keys create|list|get|rotate|revoke|history`.
func keysCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: keyledger keys create|list|get|rotate|revoke|history [flags]")
		return usageError("keys: no subcommand given")
	}
	c := &remote{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("keys "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs, true)
	var (
		name, expiresIn, reason string
		grace                   time.Duration
		all                     bool
		scopes                  multiFlag
	)
	switch args[0] {
	case "create":
		fs.StringVar(&name, "name", "", "a descriptive name: which service uses it, and where (required)")
		fs.Var(&scopes, "scope", "a scope of the new key (repeat for several)")
		fs.StringVar(&expiresIn, "expires-in", "", "the key expires after this long: 90d, 36h, …")
	case "rotate":
		fs.DurationVar(&grace, "grace", 0, "how long the replaced value keeps working (0: it stops at once, right for a leaked key)")
	case "revoke":
		fs.StringVar(&reason, "reason", "", "why, for the history")
	case "list":
		fs.BoolVar(&all, "all", false, "revoked keys too")
	case "get", "history":
	default:
		return usageError("keys: unknown subcommand %q", args[0])
	}
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if err := c.connect(true); err != nil {
		return err
	}
	id := ""
	if len(pos) > 0 {
		id = pos[0]
	}
	needID := args[0] != "create" && args[0] != "list"
	if needID && (len(pos) != 1 || id == "") || !needID && len(pos) != 0 {
		return usageError("keys %s: give one key id", args[0])
	}
	switch args[0] {
	case "create":
		if name == "" {
			return usageError("keys create: --name is needed")
		}
		body := apiclient.CreateKeyJSONRequestBody{Name: name}
		if len(scopes) > 0 {
			s := []string(scopes)
			body.Scopes = &s
		}
		if expiresIn != "" {
			d, err := parseSpan(expiresIn)
			if err != nil {
				return usageError("--expires-in: %v", err)
			}
			at := time.Now().Add(d).UTC()
			body.ExpiresAt = &at
		}
		res, err := c.client.CreateKeyWithResponse(ctx, c.org, nil, body)
		if err != nil {
			return unreachable(err)
		}
		return c.issued(res.HTTPResponse, res.Body, nil)
	case "rotate":
		body := apiclient.RotateKeyJSONRequestBody{}
		if grace > 0 {
			secs := int(grace / time.Second)
			body.GracePeriodSeconds = &secs
		}
		res, err := c.client.RotateKeyWithResponse(ctx, c.org, id, nil, body)
		if err != nil {
			return unreachable(err)
		}
		return c.issued(res.HTTPResponse, res.Body, nil)
	case "revoke":
		body := apiclient.RevokeKeyJSONRequestBody{}
		if reason != "" {
			body.Reason = &reason
		}
		res, err := c.client.RevokeKeyWithResponse(ctx, c.org, id, nil, body)
		if err != nil {
			return unreachable(err)
		}
		if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "revoked %s: every value it had stops working at once\n", id)
		return nil
	case "get":
		res, err := c.client.GetKeyWithResponse(ctx, c.org, id, nil)
		if err != nil {
			return unreachable(err)
		}
		if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
			return err
		}
		return c.print(res.Body, func(w *tabwriter.Writer) {
			fmt.Fprint(w, keyHeader)
			keyRow(w, *res.JSON200)
		})
	case "list":
		return c.list(ctx, all)
	case "history":
		return c.history(ctx, id)
	}
	return nil
}

// issued prints a new key: its value alone on stdout (KEY=$(keyledger
// keys create …) works), the rest on stderr; with --output json or yaml,
// the whole answer on stdout.
func (c *remote) issued(res *http.Response, body []byte, err error) error {
	if err := answer(res, body, err); err != nil {
		return err
	}
	if c.output != "table" {
		return c.print(body, nil)
	}
	var out apiclient.IssuedKey
	if err := json.Unmarshal(body, &out); err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, out.Secret)
	w := tabwriter.NewWriter(c.stderr, 0, 0, 2, ' ', 0)
	fmt.Fprint(w, keyHeader)
	keyRow(w, out.Key)
	_ = w.Flush()
	fmt.Fprintln(c.stderr, "Its value went to standard output, this once: store it now.")
	return nil
}

func (c *remote) list(ctx context.Context, all bool) error {
	var keys []json.RawMessage
	var typed []apiclient.Key
	var cursor *string
	for {
		limit := 1000
		params := &apiclient.ListKeysParams{Limit: &limit, Cursor: cursor}
		if all {
			st := apiclient.ListKeysParamsStatus("all")
			params.Status = &st
		}
		res, err := c.client.ListKeysWithResponse(ctx, c.org, params)
		if err != nil {
			return unreachable(err)
		}
		if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
			return err
		}
		var page struct {
			Keys       []json.RawMessage `json:"keys"`
			NextCursor string            `json:"next_cursor"`
		}
		var tpage apiclient.KeyPage
		if err := json.Unmarshal(res.Body, &page); err != nil {
			return err
		}
		if err := json.Unmarshal(res.Body, &tpage); err != nil {
			return err
		}
		keys = append(keys, page.Keys...)
		typed = append(typed, tpage.Keys...)
		if page.NextCursor == "" {
			break
		}
		cursor = &page.NextCursor
	}
	if keys == nil {
		keys = []json.RawMessage{}
	}
	raw, _ := json.Marshal(map[string]any{"keys": keys})
	return c.print(raw, func(w *tabwriter.Writer) {
		fmt.Fprint(w, keyHeader)
		for _, k := range typed {
			keyRow(w, k)
		}
	})
}

func (c *remote) history(ctx context.Context, id string) error {
	var events []json.RawMessage
	var typed []apiclient.Event
	after := int64(0)
	for {
		limit := 1000
		res, err := c.client.ListKeyEventsWithResponse(ctx, c.org, id, &apiclient.ListKeyEventsParams{Limit: &limit, AfterSeq: &after})
		if err != nil {
			return unreachable(err)
		}
		if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
			return err
		}
		var page struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(res.Body, &page); err != nil {
			return err
		}
		events = append(events, page.Events...)
		typed = append(typed, res.JSON200.Events...)
		if !res.JSON200.More {
			break
		}
		after = res.JSON200.NextAfterSeq
	}
	if events == nil {
		events = []json.RawMessage{}
	}
	raw, _ := json.Marshal(map[string]any{"events": events})
	return c.print(raw, func(w *tabwriter.Writer) {
		fmt.Fprint(w, "SEQ\tOCCURRED\tTYPE\tBY\n")
		for _, e := range typed {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s:%s\n", e.Seq, ts(&e.OccurredAt), printable(string(e.Type)), printable(string(e.Actor.Kind)), printable(e.Actor.Name))
		}
	})
}

// verifyCmd runs `keyledger verify KEY` (or - for standard input): it
// prints the verdict, and exits 0 only for VALID.
func verifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &remote{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs, false)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError("usage: keyledger verify KEY (or - to read it from standard input)")
	}
	key := pos[0]
	if key == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, 4096))
		if err != nil {
			return err
		}
		key = strings.TrimSpace(string(b))
	}
	if err := c.connect(false); err != nil {
		return err
	}
	res, err := c.client.VerifyKeyWithResponse(ctx, nil, apiclient.VerifyKeyJSONRequestBody{Key: key})
	if err != nil {
		return unreachable(err)
	}
	if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
		return err
	}
	v := res.JSON200
	if err := c.print(res.Body, func(w *tabwriter.Writer) {
		fmt.Fprint(w, "CODE\tORG\tKEY\tNAME\tSCOPES\tEXPIRES\n")
		deref := func(s *string) string {
			if s == nil {
				return "-"
			}
			return printable(*s)
		}
		scopes := "-"
		if v.Scopes != nil {
			scopes = strings.Join(*v.Scopes, ",")
		}
		code := string(v.Code)
		if v.Deprecated {
			code += " (deprecated)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(code), deref(v.OrgId), deref(v.KeyId), deref(v.Name), printable(scopes), ts(v.ExpiresAt))
	}); err != nil {
		return err
	}
	if !v.Valid {
		return &exitError{code: exitFailed, err: errors.New("the key is not valid: " + string(v.Code))}
	}
	return nil
}

// whoamiCmd runs `keyledger whoami`: the key KEYLEDGER_TOKEN holds.
func whoamiCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c := &remote{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("whoami", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs, false)
	if err := fs.Parse(args); err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	if err := c.connect(false); err != nil {
		return err
	}
	if c.token == "" {
		return &exitError{code: exitForbidden, err: errors.New("no credential: set KEYLEDGER_TOKEN to a key")}
	}
	res, err := c.client.WhoamiWithResponse(ctx, nil)
	if err != nil {
		return unreachable(err)
	}
	if err := answer(res.HTTPResponse, res.Body, nil); err != nil {
		return err
	}
	return c.print(res.Body, func(w *tabwriter.Writer) {
		fmt.Fprint(w, keyHeader)
		keyRow(w, *res.JSON200)
	})
}

// parseInterspersed parses flags wherever they stand among the
// arguments (keyledger keys get ID --output json), and returns the others.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, &exitError{code: exitUsage, err: err}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseSpan reads 90d, 12h, 30m.
func parseSpan(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(d, "%d", &n); err != nil || n <= 0 || fmt.Sprint(n) != d {
			return 0, fmt.Errorf("%q is not a whole number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d <= 0 {
		err = fmt.Errorf("%q is not a span ahead", s)
	}
	return d, err
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
