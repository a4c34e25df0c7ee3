package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
)

// The propagation scenario's instance B runs in a process of its own: the
// keyledger binary again (Options.Follower, `keyledger __bench-follow`),
// connected to the parent's embedded nats-server over its loopback client
// port as another instance on the same machine would be. The two speak in
// lines, the parent on B's standard input, B on its standard output:
//
//	parent → B   {"url":…,"seed":…,"signers":…}   first, once: where and whom to trust
//	B → parent   ready                             B's projections hold the stream
//	parent → B   watch SEQ SECRET                  a key created at SEQ: report its refusal
//	B → parent   watching                          B has applied SEQ and the key verifies
//	B → parent   refused UNIXNANO                  B's index refuses the watched key since
//	B → parent   delivered UNIXNANO                a raw message reached B's subscription
//	B → parent   error TEXT                        and B stops
//
// The instants are the wall clock (CLOCK_REALTIME), one clock for every
// process of the machine, read at once in each: the parent subtracts its
// own reading at sending from B's at refusing, so no pipe hop is inside a
// figure.

// followConfig is the first line the parent sends B.
type followConfig struct {
	URL     string `json:"url"`
	Seed    string `json:"seed"`    // the embedded server's service user
	Signers string `json:"signers"` // the trust set, PEM: A's key
}

// rawPropSubject is where the raw baseline is published, inside the
// stream (so that it is a JetStream publish, stored and synced as an
// event is) but of an org no key is in.
const rawPropSubject = "keyledger.events.rawprop.>"

// Follow is instance B: it reads its configuration and then the parent's
// requests from in, and writes its answers to out, until in ends.
func Follow(ctx context.Context, in io.Reader, out io.Writer) error {
	w := &lineWriter{w: bufio.NewWriter(out)}
	err := follow(ctx, bufio.NewScanner(in), w)
	if err != nil {
		w.line("error " + strings.ReplaceAll(err.Error(), "\n", " "))
	}
	return err
}

func follow(ctx context.Context, in *bufio.Scanner, w *lineWriter) error {
	if !in.Scan() {
		return errors.New("no configuration on standard input")
	}
	var cfg followConfig
	if err := json.Unmarshal(in.Bytes(), &cfg); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	trust, err := events.ParseSigners([]byte(cfg.Signers))
	if err != nil {
		return err
	}
	nk, err := nats.NkeyOptionFromSeed(cfg.Seed)
	if err != nil {
		return err
	}
	nc, err := events.Connect(cfg.URL, nk)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store, err := events.Attach(ctx, js, events.Config{Logger: quiet, Signer: newSigner(), Signers: trust})
	if err != nil {
		return err
	}
	// The projections as serve builds them, and after them the watcher, which
	// the runner calls once the table has applied each event.
	table := projections.NewTable()
	watch := &watcher{index: table.Index(), w: w}
	runner := projections.NewRunner(store, quiet, table, watch)
	store.UseCache(table.Listing())
	store.UseVerdicts(table)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = runner.Run(rctx) }()
	sub, err := nc.Subscribe(rawPropSubject, func(*nats.Msg) { w.line("delivered " + strconv.FormatInt(time.Now().UnixNano(), 10)) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		return err
	}
	if err := runner.WaitReady(ctx); err != nil {
		return err
	}
	w.line("ready")
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) != 3 || f[0] != "watch" {
			return fmt.Errorf("unknown request %q", in.Text())
		}
		seq, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = runner.WaitFor(wctx, seq)
		cancel()
		if err != nil {
			return fmt.Errorf("applying %d: %w", seq, err)
		}
		if res := watch.index.Verify(f[2], time.Now()); !res.Valid() {
			return fmt.Errorf("the key created at %d verifies %s here", seq, res.Code)
		}
		watch.secret.Store(&f[2])
		w.line("watching")
	}
	return in.Err()
}

// watcher is a projection after the table: when an event applied is a
// revocation and the watched key now verifies as revoked, it reports the
// instant. It checks with a verification, as a service asking B would,
// rather than trusting the event's type.
type watcher struct {
	index  *projections.VerifyIndex
	w      *lineWriter
	secret atomic.Pointer[string]
	last   atomic.Uint64
}

func (x *watcher) Apply(e domain.Event) error {
	x.last.Store(e.Seq)
	s := x.secret.Load()
	if s == nil || e.Type != domain.TypeKeyRevoked {
		return nil
	}
	if x.index.Verify(*s, time.Now()).Code != domain.VerifyRevoked {
		return nil
	}
	at := time.Now().UnixNano()
	x.secret.Store(nil)
	x.w.line("refused " + strconv.FormatInt(at, 10))
	return nil
}

func (x *watcher) LastSeq() uint64 { return x.last.Load() }

// lineWriter writes whole lines from any goroutine, each at once.
type lineWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (l *lineWriter) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.WriteString(s + "\n")
	_ = l.w.Flush()
}

// follower is the parent's handle on instance B.
type follower struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	lines  chan string
	stderr *strings.Builder
}

// startFollower starts B with the command in argv, hands it its
// configuration, and waits until its projections hold the stream.
func startFollower(ctx context.Context, argv []string, cfg followConfig) (*follower, error) {
	if len(argv) == 0 {
		return nil, errors.New("no command to start instance B in its own process (Options.Follower)")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	f := &follower{cmd: cmd, in: in, lines: make(chan string, 16), stderr: &strings.Builder{}}
	cmd.Stderr = &syncWriter{b: f.stderr}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(f.lines)
		sc := bufio.NewScanner(outp)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
	}()
	line, _ := json.Marshal(cfg)
	if err := f.send(string(line)); err != nil {
		f.stop()
		return nil, err
	}
	if _, err := f.expect("ready", 60*time.Second); err != nil {
		f.stop()
		return nil, err
	}
	return f, nil
}

func (f *follower) send(line string) error {
	_, err := io.WriteString(f.in, line+"\n")
	return err
}

// expect returns the rest of B's next line, which must start with word.
func (f *follower) expect(word string, within time.Duration) (string, error) {
	select {
	case line, ok := <-f.lines:
		if !ok {
			_ = f.cmd.Wait()
			return "", fmt.Errorf("instance B ended: %s", strings.TrimSpace(f.stderr.String()))
		}
		head, rest, _ := strings.Cut(line, " ")
		if head != word {
			return "", fmt.Errorf("instance B said %q, waiting for %s", line, word)
		}
		return rest, nil
	case <-time.After(within):
		return "", fmt.Errorf("instance B said nothing within %s, waiting for %s", within, word)
	}
}

// instant is B's report of when something happened.
func (f *follower) instant(word string, within time.Duration) (time.Time, error) {
	rest, err := f.expect(word, within)
	if err != nil {
		return time.Time{}, err
	}
	ns, err := strconv.ParseInt(rest, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("instance B: %q: %w", rest, err)
	}
	return time.Unix(0, ns), nil
}

// stop ends B: its input closes, and it exits.
func (f *follower) stop() {
	_ = f.in.Close()
	done := make(chan struct{})
	go func() {
		for range f.lines {
		}
		_ = f.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
	}
}

// syncWriter lets the exec package's copier and a reader share a builder.
type syncWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
