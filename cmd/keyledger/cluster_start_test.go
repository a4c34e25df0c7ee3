package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
)

// clusterJS is a client of nodes with every right: the test's, and an
// anonymous client's on a cluster with no authorization.
func clusterJS(t *testing.T, nodes []*natsNode) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls(nodes), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestClusterFirstStartsTogether starts the three nodes of a cluster and,
// at the same instant, before it has a JetStream leader, two (then three)
// keyledger instances asking for three replicas, as docker compose does:
// each waits, saying so in its log, and all become ready, on one stream
// and one set of buckets.
func TestClusterFirstStartsTogether(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster test: not in -short")
	}
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("%dInstances", n), func(t *testing.T) {
			nodes := clusterForming(t)
			dir := t.TempDir()
			var ps []*process
			for i := range n {
				addr := freeAddr(t)
				env := []string{"KEYLEDGER_NATS_URL=" + urls(nodes), "KEYLEDGER_HTTP_ADDR=" + addr, "KEYLEDGER_STREAM_REPLICAS=3",
					"KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, fmt.Sprintf("signing-%d.pem", i))}
				ps = append(ps, startServe(t, dir, addr, env))
			}
			for _, p := range ps {
				p.waitReady(t, 90*time.Second)
			}
			for i, p := range ps {
				log := p.stderr.String()
				if !strings.Contains(log, `"msg":"waiting for `) {
					t.Errorf("instance %d became ready without a line saying what it waited for:\n%s", i, log)
				}
				t.Logf("instance %d waited: %s", i, waitedFor(log))
				if strings.Contains(log, `"level":"ERROR"`) {
					t.Errorf("instance %d logged an error while starting:\n%s", i, log)
				}
			}
			js := clusterJS(t, nodes)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, name := range []string{events.StreamName, "KV_" + events.IdempotencyBucket, events.SnapshotStream,
				events.UsageStream, "OBJ_" + events.UsageRollupBucket} {
				s, err := js.Stream(ctx, name)
				if err != nil {
					t.Errorf("stream %s: %v", name, err)
					continue
				}
				if got := s.CachedInfo().Config.Replicas; got != 3 {
					t.Errorf("stream %s has %d replicas, want 3", name, got)
				}
			}
		})
	}
}

// TestClusterStreamDeletedUnderARunningInstance: an anonymous client
// deletes KEYLEDGER under a running instance (the cluster has no
// authorization): within seconds /readyz answers 503 saying so,
// keyledger_stream_ok is 0, verifications answer 503, and an error line
// says what happened. The stream made again, empty, with the very same
// settings, does not make the instance healthy.
func TestClusterStreamDeletedUnderARunningInstance(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster test: not in -short")
	}
	nodes := cluster(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_NATS_URL=" + urls(nodes), "KEYLEDGER_HTTP_ADDR=" + addr,
		"KEYLEDGER_STREAM_REPLICAS=3", "KEYLEDGER_SIGNING_KEY=" + filepath.Join(dir, "signing.pem")})

	js := clusterJS(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if err := js.DeleteStream(ctx, events.StreamName); err != nil {
		t.Fatal(err)
	}
	r, ok := until(20*time.Second, func() (readyz, error) { return getReadyz(p.url) }, func(r readyz) bool { return r.code != http.StatusOK })
	if !ok || r.code != http.StatusServiceUnavailable || r.body.Status != events.StreamDeleted {
		t.Fatalf("/readyz after the stream was deleted: %d %+v; want 503 %q\n%s", r.code, r.body, events.StreamDeleted, p.stderr)
	}
	if m := metrics(t, p.url); !strings.Contains(m, "\nkeyledger_stream_ok 0\n") {
		t.Errorf("/metrics after the delete has no keyledger_stream_ok 0")
	}
	if !strings.Contains(p.stderr.String(), `"level":"ERROR","msg":"`+events.StreamDeleted) {
		t.Errorf("no error line says the stream was deleted:\n%s", p.stderr)
	}
	if code := verifyStatus(t, p.url); code != http.StatusServiceUnavailable {
		t.Errorf("a verify after the stream was deleted answers %d, want 503", code)
	}

	// Made again by whoever may: empty, the same settings.
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := js.CreateStream(ctx, cfg)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create the stream again: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(5 * time.Second) // the instance asks every second
	if r, err := getReadyz(p.url); err != nil || r.code != http.StatusServiceUnavailable || r.body.Status != events.StreamDeleted {
		t.Errorf("/readyz once the stream was made again: %d %+v %v; want still 503 %q", r.code, r.body, err, events.StreamDeleted)
	}
	if m := metrics(t, p.url); !strings.Contains(m, "\nkeyledger_stream_ok 0\n") {
		t.Errorf("/metrics once the stream was made again has no keyledger_stream_ok 0")
	}
}

func metrics(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}

func verifyStatus(t *testing.T, url string) int {
	t.Helper()
	res, err := http.Post(url+"/v1/verify", "application/json", strings.NewReader(`{"key":"c8k_x"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// waitedFor sums up the start-up's waiting lines of a log: each step and
// reason, with how many tries.
func waitedFor(log string) string {
	type key struct{ msg, reason string }
	counts := map[key]int{}
	var order []key
	for _, line := range strings.Split(log, "\n") {
		var l struct{ Msg, Reason string }
		if json.Unmarshal([]byte(line), &l) != nil || !strings.HasPrefix(l.Msg, "waiting for ") {
			continue
		}
		k := key{l.Msg, l.Reason}
		if counts[k] == 0 {
			order = append(order, k)
		}
		counts[k]++
	}
	var out []string
	for _, k := range order {
		out = append(out, fmt.Sprintf("%s (%s) x%d", strings.TrimPrefix(k.msg, "waiting for "), k.reason, counts[k]))
	}
	return strings.Join(out, "; ")
}
