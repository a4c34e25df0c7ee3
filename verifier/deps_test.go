package verifier_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNothingOfNATSServer keeps the verifier light for the services
// that build it in: nats.go and keyledger's own domain, events and
// projections, never the embedded server (events/natsembed). Before the
// split it pulled in 262 packages, 16 of them nats-server's.
func TestImportsNothingOfNATSServer(t *testing.T) {
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool on PATH to list the verifier's dependencies: %v", err)
	}
	cmd := exec.Command(gotool, "list", "-deps", ".")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, stderr.Bytes())
	}
	deps := strings.Fields(string(out))
	t.Logf("the verifier imports %d packages (262 before the split)", len(deps))
	for _, dep := range deps {
		if strings.Contains(dep, "nats-server") {
			t.Errorf("the verifier imports %s: a service would build in the NATS server", dep)
		}
	}
}
