package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"

	"github.com/keyledger/keyledger/internal/bench"
)

// benchCmd runs `keyledger bench`: every scenario in this process against
// the embedded default, each beside a baseline measured in the same run.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "a small version of every scenario (for CI); timings are shown but not judged")
	keys := fs.Int("keys", 0, "keys for verify, cold start, verifier start and memory (default 1,000,000; --quick 5,000)")
	dir := fs.String("dir", "", "scratch directory (default: a temporary one, removed afterwards)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run here")
	traceFile := fs.String("trace", "", "write an execution trace of the whole run here (go tool trace; -pprof=sched for scheduling delays)")
	only := fs.String("only", "", `run only the scenarios whose names hold one of these comma-separated words, e.g. "verify over HTTP,commands"`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("the propagation scenario starts this binary again: %w", err)
	}
	rows, err := bench.Run(ctx, bench.Options{
		Quick: *quick, Keys: *keys, Dir: *dir, Only: splitList(*only),
		Follower: []string{self, "__bench-follow"},
		Observe:  func(s string) { fmt.Fprintln(stderr, "running:", s) },
	}, stdout)
	if err != nil {
		return err
	}
	if *quick {
		return nil
	}
	for _, r := range rows {
		if !r.Met {
			return errors.New("some targets are not met (see docs/PERFORMANCE.md)")
		}
	}
	return nil
}

// benchFollowCmd runs `keyledger __bench-follow`, hidden: instance B of
// the bench's propagation scenario, in a process of its own, speaking with
// the bench on its standard input and output (see bench.Follow).
func benchFollowCmd(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	return bench.Follow(ctx, stdin, stdout)
}
