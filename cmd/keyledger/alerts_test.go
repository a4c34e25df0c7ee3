package main

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAlertRules runs deploy/alertcheck, which loads deploy/alerts.yml
// with Prometheus's own rule parser (a module of its own, so that
// Prometheus stays out of keyledger's build), giving it the metric names
// a running instance exports: every alert must select only those.
func TestAlertRules(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Prometheus's rule parser: not in -short")
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	p := serveProcess(t, dir, addr, []string{"KEYLEDGER_HTTP_ADDR=" + addr})
	// A request of each kind the rules look at, so that every family has samples.
	if res, err := http.Post(p.url+"/v1/verify", "application/json", strings.NewReader(`{"key":"c8k_x"}`)); err == nil {
		res.Body.Close()
	}
	res, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var names []string
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		// # TYPE keyledger_http_request_duration_seconds histogram
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		names = append(names, f[2])
		switch f[3] {
		case "histogram":
			names = append(names, f[2]+"_bucket", f[2]+"_sum", f[2]+"_count")
		case "summary":
			names = append(names, f[2]+"_sum", f[2]+"_count")
		}
	}
	cmd := exec.Command("go", "test", "-count=1", "-v", "./...")
	cmd.Dir = "../../deploy/alertcheck"
	cmd.Env = append(os.Environ(), "GOWORK=off", "KEYLEDGER_METRICS="+strings.Join(names, ","))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/alertcheck: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
