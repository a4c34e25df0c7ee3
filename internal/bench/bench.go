// Package bench measures keyledger against the bare work it cannot avoid,
// in one process and one run, so that each figure comes with a baseline
// from the same machine at the same moment: `keyledger bench`.
package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
)

// Options size a run.
type Options struct {
	Quick   bool   // a small version of everything, for CI: no timing judged
	Keys    int    // keys for verify, cold start, verifier start, memory and usage (1,000,000; quick 5,000)
	Dir     string // scratch directory for the embedded stores
	Logger  *slog.Logger
	Observe func(scenario string) // called as each scenario starts
	// Follower is the command line that starts instance B of the
	// propagation scenario in a process of its own: the keyledger binary
	// with its hidden __bench-follow command, which runs Follow.
	Follower []string
	// Only, when not empty, runs only the scenarios whose names hold one
	// of these strings.
	Only []string
}

func (o Options) runs(scenario string) bool {
	if len(o.Only) == 0 {
		return true
	}
	return slices.ContainsFunc(o.Only, func(s string) bool { return strings.Contains(scenario, s) })
}

// Row is one line of the table.
type Row struct {
	Scenario string
	Figure   string
	Baseline string
	Ratio    float64 // figure ÷ baseline (for memory: ÷ the target)
	Target   string
	Met      bool
}

// Run runs every scenario and writes the table to w.
func Run(ctx context.Context, o Options, w io.Writer) ([]Row, error) {
	if o.Keys == 0 {
		o.Keys = 1000000
		if o.Quick {
			o.Keys = 5000
		}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Dir == "" {
		dir, err := os.MkdirTemp("", "keyledger-bench")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		o.Dir = dir
	}
	// The scenarios that need no fixture run first: its million decoded
	// events would otherwise sit in the heap, and every garbage collection
	// during their measurements would scan them, which no running service
	// does. The table keeps this order.
	scenarios := []struct {
		name    string
		fixture bool
		run     func(context.Context, Options, *fixture) ([]Row, error)
	}{
		{"verify in-process", true, verifyInProcess},
		{"verify over HTTP", true, verifyOverHTTP},
		{"usage outcomes over HTTP", true, outcomesOverHTTP},
		{"commands", false, commands},
		{"replicated commands", false, replicatedCommands},
		{"revocation propagation", false, propagation},
		{"edge verifier", false, edgePropagation},
		{"revocation delivery", false, delivery},
		{"usage flush", false, usageFlush},
		{"usage outcomes memory", false, outcomesMemory},
		{"cold start", true, coldStart},
		{"verifier start", true, verifierStart},
		{"memory", true, memory},
	}
	got := make([][]Row, len(scenarios))
	var fx *fixture
	for _, withFixture := range []bool{false, true} {
		for i, s := range scenarios {
			if s.fixture != withFixture || !o.runs(s.name) {
				continue
			}
			if s.fixture && fx == nil {
				var err error
				if fx, err = newFixture(o.Keys); err != nil {
					return nil, err
				}
			}
			if o.Observe != nil {
				o.Observe(s.name)
			}
			rows, err := s.run(ctx, o, fx)
			if err != nil {
				return slices.Concat(got...), fmt.Errorf("%s: %w", s.name, err)
			}
			got[i] = rows
		}
	}
	rows := slices.Concat(got...)
	Print(w, rows, o)
	return rows, nil
}

// Print writes the table.
func Print(w io.Writer, rows []Row, o Options) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tBASELINE (same run)\tRATIO\tTARGET\tMET")
	for _, r := range rows {
		met := "yes"
		switch {
		case o.Quick:
			met = "(quick: not judged)"
		case !r.Met:
			met = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f\t%s\t%s\n", r.Scenario, r.Figure, r.Baseline, r.Ratio, r.Target, met)
	}
	tw.Flush()
}

// fixture is the keys every scenario shares: their secrets and events,
// made once. It is shaped like an org's keys rather than like one key
// copied: each key has one to four scopes out of twelve, its creator is
// one of a thousand people or its org's management key, and one key in
// five has been rotated since (with a grace period, so that its replaced
// secret still verifies and is still indexed).
type fixture struct {
	secrets []string       // each key's current secret
	created []domain.Event // one creation a key
	rotated []domain.Event // the rotations, after every creation
	// serverBytesPerKey is measured by the cold start for the memory row.
	serverBytesPerKey float64
}

var benchBy = domain.SystemPrincipal("bench", "keyledger bench")

// fixtureScopes are what the fixture's keys hold, a few each.
var fixtureScopes = []string{"read", "write", "deploy", "billing:read", "billing:write", "audit:read",
	"metrics:write", "orders:read", "orders:write", "users:read", "search", "storage:write"}

// rotatedShare is the part of the fixture's keys that were rotated.
const rotatedShare = 5 // one in five

// newSigner is a fresh signing key, as every instance has one.
func newSigner() *events.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return events.NewSigner(priv)
}

// fixtureActor is who made key i of org: one of a thousand people, each a
// manager of a few orgs, or, for one key in four, the org's own
// management key.
func fixtureActor(i int, org string) domain.Principal {
	if i%4 == 3 {
		return domain.KeyPrincipal(domain.Key{ID: "mgmt-" + org, OrgID: org, Name: "deploy bot",
			Scopes: append([]string{domain.ScopeManage}, fixtureScopes...)})
	}
	p := i % 1000
	return domain.PersonPrincipal(fmt.Sprintf("user-%d", p), fmt.Sprintf("Person %d", p), map[string]string{org: domain.RoleManager})
}

// fixtureScopeSet is key i's scopes: one to four, in some hundred sets.
func fixtureScopeSet(i int) []string {
	n := 1 + i%4
	from, step := (i/4)%len(fixtureScopes), 1+(i/48)%3
	out := make([]string, 0, n)
	for j := range n {
		out = append(out, fixtureScopes[(from+j*step)%len(fixtureScopes)])
	}
	return out
}

func newFixture(n int) (*fixture, error) {
	f := &fixture{secrets: make([]string, n), created: make([]domain.Event, n), rotated: make([]domain.Event, 0, n/rotatedShare+1)}
	now := time.Now().UTC().Truncate(time.Microsecond)
	// The actors and scope sets repeat: each is made once, so that the
	// fixture's own memory (ten million keys' events, held while the
	// stream is filled) does not crowd out what is measured. Decoded
	// afresh, as a start decodes them, the events share nothing.
	type actorOf struct {
		who int // the person, or -1 for the org's management key
		org string
	}
	actors := map[actorOf]domain.Principal{}
	actor := func(i int, org string) domain.Principal {
		k := actorOf{i % 1000, org}
		if i%4 == 3 {
			k.who = -1
		}
		a, ok := actors[k]
		if !ok {
			a = fixtureActor(i, org)
			actors[k] = a
		}
		return a
	}
	orgs := make([]string, 100)
	for i := range orgs {
		orgs[i] = fmt.Sprintf("org-%d", i)
	}
	scopeSets := map[int][]string{}
	scopes := func(i int) []string {
		const cycle = 4 * 12 * 3 * 4 // fixtureScopeSet repeats with i%cycle
		s, ok := scopeSets[i%cycle]
		if !ok {
			s = fixtureScopeSet(i)
			scopeSets[i%cycle] = s
		}
		return s
	}
	for i := range n {
		s, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
		if err != nil {
			return nil, err
		}
		org := orgs[i%100]
		by := actor(i, org)
		e, err := domain.DecideCreate(domain.CreateKey{OrgID: org, Name: fmt.Sprintf("service key %d", i), Scopes: scopes(i), By: by}, now, 0, s)
		if err != nil {
			return nil, err
		}
		f.secrets[i], f.created[i] = s, e
		if i%rotatedShare != 0 {
			continue
		}
		e.Seq = 1 // any: Rebuild needs one
		k, err := domain.Rebuild([]domain.Event{e})
		if err != nil {
			return nil, err
		}
		next, err := domain.GenerateSecret(domain.DefaultPrefix, nil)
		if err != nil {
			return nil, err
		}
		r, err := k.DecideRotate(domain.RotateKey{GracePeriod: 24 * time.Hour, By: actor(i+1, org)}, now.Add(time.Minute), next)
		if err != nil {
			return nil, err
		}
		f.secrets[i] = next
		f.rotated = append(f.rotated, r)
	}
	return f, nil
}

// events are the fixture's events in stream order, numbered from 1.
func (f *fixture) events() []domain.Event {
	all := slices.Concat(f.created, f.rotated)
	for i := range all {
		all[i].Seq = uint64(i + 1)
	}
	return all
}

// percentile returns the p-th percentile (0..100) of sorted durations.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p / 100)
	return d[i]
}

func dur(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%d ns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d.Nanoseconds())/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2f ms", float64(d.Nanoseconds())/1e6)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func count(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
