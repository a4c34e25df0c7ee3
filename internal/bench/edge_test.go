package bench

import (
	"context"
	"os"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestEdgeConfigsGrantWhatDeployGrants: the edge scenario's servers are
// deploy/'s, so every subject deploy/ grants its users is granted in the
// scenario's configurations too (which add only the round trip's).
func TestEdgeConfigsGrantWhatDeployGrants(t *testing.T) {
	quoted := regexp.MustCompile(`"(\$[^"]+|_INBOX[^"]+)"`)
	for name, conf := range map[string]string{"hub-leafnodes.conf": edgeHubConf, "edge-leaf.conf": edgeLeafConf} {
		raw, err := os.ReadFile("../../deploy/" + name)
		if err != nil {
			t.Fatal(err)
		}
		subjects := quoted.FindAllStringSubmatch(string(raw), -1)
		if len(subjects) < 2 {
			t.Fatalf("deploy/%s: found %d granted subjects", name, len(subjects))
		}
		for _, m := range subjects {
			if strings.HasPrefix(m[1], "$2a$") {
				continue // a password's placeholder
			}
			if !strings.Contains(conf, `"`+m[1]+`"`) {
				t.Errorf("deploy/%s grants %s; the bench's configuration does not", name, m[1])
			}
		}
	}
}

// TestEdgeScenarioRunsAndLeavesNothingRunning runs the edge scenario as
// --quick does, and checks it stops what it started.
func TestEdgeScenarioRunsAndLeavesNothingRunning(t *testing.T) {
	before := runtime.NumGoroutine()
	rows, err := edgePropagation(context.Background(), Options{Quick: true, Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || !strings.Contains(rows[0].Scenario, "edge verifier") {
		t.Fatalf("rows: %+v", rows)
	}
	t.Logf("%s | %s | %s | %s", rows[0].Scenario, rows[0].Figure, rows[0].Baseline, rows[0].Target)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before the scenario, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
