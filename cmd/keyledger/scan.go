package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
)

// A found key: where, and its masked form (the key itself is printed
// nowhere).
type finding struct {
	path   string
	at     int64 // byte offset in the file
	line   int
	masked string
	key    string // sent to --report only; never printed
}

// scanChunk is how much of a file is read at once; a key split across two
// chunks is found in the overlap.
const scanChunk = 1 << 20

// scan finds keys (the key format with a valid checksum) in files and
// directories: `keyledger scan PATH…`. It prints file, line and masked
// key, and fails (exit 1) when it finds one. Directories are walked
// without following symbolic links; .git directories are skipped (their
// objects are compressed: scan the working tree, or `git show` a commit).
// Binary files are read too: a key compiled into one has leaked as much.
func scan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("scan", flag.ContinueOnError)
	fset.SetOutput(stderr)
	quiet := fset.Bool("quiet", false, "print only the findings, not the summary")
	report := fset.String("report", "", "send every key found to this keyledger's POST /v1/leaks (e.g. https://keys.example.com), which revokes it")
	token := fset.String("report-token", os.Getenv("KEYLEDGER_REPORT_TOKEN"), "with --report: a key holding leaks:report (default $KEYLEDGER_REPORT_TOKEN)")
	fset.Usage = func() {
		fmt.Fprintln(stderr, "usage: keyledger scan [--quiet] PATH…\n\nPrints every key found (file:line: masked key) and exits 1 if there is one.")
		fset.PrintDefaults()
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() == 0 {
		fset.Usage()
		return errors.New("scan: no path given")
	}
	if *report != "" {
		u, err := url.Parse(*report)
		if err != nil || (u.Scheme != "https" && !(u.Scheme == "http" && loopbackHost(u.Hostname()))) || u.Host == "" {
			return errors.New("scan: --report must be an https URL (plain http only on a loopback address): it sends the keys found, and a credential")
		}
	}
	start := time.Now()
	files := make(chan string, 256)
	var walkErr error
	go func() {
		defer close(files)
		for _, root := range fset.Args() {
			err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
				switch {
				case err != nil:
					return err
				case ctx.Err() != nil:
					return ctx.Err()
				case d.IsDir() && d.Name() == ".git" && path != root:
					return filepath.SkipDir
				case d.Type().IsRegular():
					files <- path
				}
				return nil
			})
			if err != nil && walkErr == nil {
				walkErr = err
			}
		}
	}()
	var (
		mu       sync.Mutex
		found    []finding
		scanned  int
		bytesIn  int64
		firstErr error
		wg       sync.WaitGroup
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			buf := make([]byte, scanChunk+domain.KeyBodyLen+32)
			for path := range files {
				fs, n, err := scanFile(path, buf)
				mu.Lock()
				found, scanned, bytesIn = append(found, fs...), scanned+1, bytesIn+n
				if err != nil && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(found, func(a, b finding) int {
		if c := cmpString(a.path, b.path); c != 0 {
			return c
		}
		return int(a.at - b.at)
	})
	for _, f := range found {
		fmt.Fprintf(stdout, "%s:%d: %s\n", f.path, f.line, f.masked)
	}
	if !*quiet {
		fmt.Fprintf(stderr, "scanned %d files, %.1f MB, in %s: %d keys found\n", scanned, float64(bytesIn)/1e6, time.Since(start).Round(time.Millisecond), len(found))
	}
	// What was found is reported even if part of the tree could not be read.
	if *report != "" && len(found) > 0 {
		if err := reportFindings(ctx, *report, *token, found, stderr); err != nil {
			return fmt.Errorf("scan --report: %w", err)
		}
	}
	if err := cmpErr(walkErr, firstErr); err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if len(found) > 0 {
		return fmt.Errorf("%d keys found: revoke each one (it is no longer secret), then remove it", len(found))
	}
	return nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// scanFile finds the keys of one file, reading it a chunk at a time into
// buf. The end of each chunk, a whole key long and one byte more (the byte
// before a key decides whether it stands alone), is read again at the
// start of the next; a key is reported by the chunk it starts in.
func scanFile(path string, buf []byte) ([]finding, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	const overlap = domain.KeyBodyLen + 22 // the longest key (a 20-byte prefix, "_", the body) and the byte after it
	var (
		out   []finding
		total int64
		line  = 1   // the line of buf[0]
		keep  = 0   // bytes carried over from the previous chunk
		base  int64 // the file offset of buf[0]
	)
	for {
		n, err := io.ReadFull(f, buf[keep:keep+scanChunk])
		total += int64(n)
		data := buf[:keep+n]
		end := len(data) // keys starting before end are this chunk's
		more := err == nil
		if more {
			end = len(data) - overlap
		}
		from := 0
		if keep > 0 {
			from = 1 // buf[0] is the byte before the carried part: the previous chunk's
		}
		pos, at := 0, line
		domain.FindKeys(data, func(off int, key string) {
			if off < from || off >= end {
				return
			}
			at += bytes.Count(data[pos:off], []byte{'\n'})
			pos = off
			out = append(out, finding{path: path, at: base + int64(off), line: at, masked: domain.MaskSecret(key), key: key})
		})
		if !more {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return out, total, nil
			}
			return out, total, err
		}
		line += bytes.Count(data[:end-1], []byte{'\n'})
		base += int64(end - 1)
		keep = copy(buf, data[end-1:])
	}
}

// reportFindings sends each key found to server's POST /v1/leaks, with the
// file and line as its URL, and says what became of it.
func reportFindings(ctx context.Context, server, token string, found []finding, stderr io.Writer) error {
	if token == "" {
		return errors.New("--report needs --report-token (or KEYLEDGER_REPORT_TOKEN): a key holding leaks:report")
	}
	// No redirect is followed: it would send the keys found elsewhere.
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	endpoint := strings.TrimRight(server, "/") + "/v1/leaks"
	for _, f := range found {
		where := f.path
		if abs, err := filepath.Abs(f.path); err == nil {
			where = abs
		}
		body, _ := json.Marshal(map[string]string{"token": f.key, "url": (&url.URL{Scheme: "file", Path: where, Fragment: fmt.Sprintf("L%d", f.line)}).String(), "source": "keyledger scan"})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		var out struct {
			Label   string `json:"label"`
			Revoked bool   `json:"revoked"`
			Error   struct{ Message string }
		}
		_ = json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&out)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s: %s", endpoint, res.Status, out.Error.Message)
		}
		what := "not a key of this keyledger"
		switch {
		case out.Label == "true_positive" && out.Revoked:
			what = "revoked"
		case out.Label == "true_positive":
			what = "recorded (not revoked)"
		}
		fmt.Fprintf(stderr, "reported %s:%d: %s: %s\n", f.path, f.line, f.masked, what)
	}
	return nil
}
