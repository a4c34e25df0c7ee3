package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/keyledger/keyledger/events"
)

// composeService is what the test reads of a docker-compose.yml service.
type composeService struct {
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Ports []string `yaml:"ports"`
	Image string   `yaml:"image"`
	User  string   `yaml:"user"`
}

func readCompose(t *testing.T, path string) map[string]composeService {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &file); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return file.Services
}

// hostPath is the host side of the volume that svc mounts at container
// (the path itself, or a file under it), relative to root.
func (svc composeService) hostPath(t *testing.T, root, container string) string {
	t.Helper()
	for _, v := range svc.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], ".") {
			continue
		}
		if parts[1] == container || strings.HasPrefix(container, parts[1]+"/") {
			return filepath.Join(root, parts[0], strings.TrimPrefix(container, parts[1]))
		}
	}
	t.Fatalf("no bind mount holds %s in %v", container, svc.Volumes)
	return ""
}

// TestComposeDeploymentOnRealServers follows the README's "In production"
// word for word, with three real nats-server processes in place of
// docker-compose.yml's containers, each run with its own deploy/nats-N.conf
// (only ports and paths changed), and keyledger-init and the two instances
// run with the compose file's commands and environments (only ports and
// paths changed; the instances one after another). Then: an anonymous
// client and a route without the route credential are refused, the
// read-only credential reads the stream, a key created on one instance
// verifies on the other, writes resume after a SIGKILL of the stream
// leader's server, and keyledger-init refuses to make a key in place of a
// lost one.
func TestComposeDeploymentOnRealServers(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster test: not in -short")
	}
	needTools(t, "bash", "curl", "jq")
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	root := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../../deploy", "../../docker-compose.yml", root).CombinedOutput(); err != nil {
		t.Fatalf("copy deploy/: %v %s", err, out)
	}
	bin := filepath.Join(root, "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		t.Fatalf("build nats-server: %v\n%s", err, out)
	}
	services := readCompose(t, filepath.Join(root, "docker-compose.yml"))
	natsNames := []string{"nats-1", "nats-2", "nats-3"}

	// The loopback ports in place of the containers' names and ports.
	var nodes []*natsNode
	replace := []string{"go run ./cmd/keyledger", binary}
	monitor := map[string]string{}
	for _, name := range natsNames {
		client, route := freeAddr(t), freeAddr(t)
		monitor[name] = freeAddr(t)
		replace = append(replace, name+":4222", client, name+":6222", route)
		nodes = append(nodes, &natsNode{name: name, url: "nats://" + client})
	}
	instances := map[string]string{"keyledger-1": freeAddr(t), "keyledger-2": freeAddr(t)}
	for name, addr := range instances {
		for _, p := range services[name].Ports { // 127.0.0.1:8081:8080
			host := strings.Join(strings.Split(p, ":")[:2], ":")
			replace = append(replace, strings.Replace(host, "127.0.0.1", "localhost", 1), addr)
		}
	}
	adapt := strings.NewReplacer(replace...).Replace

	bash := func(script string, env ...string) string {
		t.Helper()
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if e, ok := err.(*exec.ExitError); ok {
				stderr = e.Stderr
			}
			t.Fatalf("%v\nscript:\n%s\nstdout:\n%s\nstderr:\n%s", err, script, out, stderr)
		}
		return string(out)
	}

	// Step 1: the credentials, then .env.
	bash(adapt(readmeBlock(t, readme, "production-credentials")))
	secrets := filepath.Join(root, "deploy", "secrets")
	if env, err := os.ReadFile(filepath.Join(root, ".env")); err != nil || !strings.HasPrefix(string(env), "KEYLEDGER_USER=") {
		t.Fatalf(".env: %q %v", env, err)
	}

	// Step 2: docker compose up, as its services would run.
	if got := strings.TrimSpace(readmeBlock(t, readme, "production-up")); got != "docker compose up --build -d" {
		t.Fatalf("the production-up block is %q; this test runs what `docker compose up --build -d` starts", got)
	}
	for i, name := range natsNames {
		svc, n := services[name], nodes[i]
		if got, want := svc.Image, "nats:"+natsServerVersion(t)+"-alpine"; got != want {
			t.Errorf("%s runs %s, want %s (go.mod's nats-server)", name, got, want)
		}
		if len(svc.Command) != 2 || svc.Command[0] != "-c" {
			t.Fatalf("%s's command is %v, want -c FILE", name, svc.Command)
		}
		n.conf = svc.hostPath(t, root, svc.Command[1])
		deployConf(t, filepath.Base(n.conf), n.conf,
			"listen: 0.0.0.0:4222", "listen: "+strings.TrimPrefix(n.url, "nats://"),
			"http: 127.0.0.1:8222", "http: "+monitor[name],
			"store_dir: /data", fmt.Sprintf("store_dir: %q", filepath.Join(root, "data-"+name)),
			"listen: 0.0.0.0:6222", "listen: "+adapt(name+":6222"))
		if got := svc.hostPath(t, root, "/etc/nats/secrets"); got != secrets {
			t.Fatalf("%s mounts %s at /etc/nats/secrets, want deploy/secrets", name, got)
		}
		startLogged(t, n, bin, filepath.Join(root, name+".log"))
	}
	for _, name := range natsNames {
		test := services[name].Healthcheck.Test
		if len(test) == 0 {
			t.Fatalf("%s has no health check", name)
		}
		url := strings.Replace(test[len(test)-1], "127.0.0.1:8222", monitor[name], 1)
		waitHealthy(t, name, url)
	}
	// Paths in the containers, and the service names, as the test has them.
	containerEnv := func(svc composeService) []string {
		env := []string{}
		for k, v := range svc.Environment {
			v = strings.ReplaceAll(v, "/secrets/", secrets+"/")
			env = append(env, k+"="+adapt(v))
		}
		sort.Strings(env)
		return env
	}
	initSvc := services["keyledger-init"]
	if got := initSvc.hostPath(t, root, "/secrets"); got != secrets {
		t.Fatalf("keyledger-init mounts %s at /secrets", got)
	}
	provision := func() (string, error) {
		_, stderr, err := runBinary(t, root, containerEnv(initSvc), initSvc.Command...)
		return stderr, err
	}
	if stderr, err := provision(); err != nil {
		t.Fatalf("keyledger-init: %v %s", err, stderr)
	}
	for _, name := range []string{"keyledger-1", "keyledger-2"} {
		svc := services[name]
		if c := svc.DependsOn["keyledger-init"].Condition; c != "service_completed_successfully" {
			t.Errorf("%s waits for keyledger-init with %q", name, c)
		}
		for _, n := range natsNames {
			if c := svc.DependsOn[n].Condition; c != "service_healthy" {
				t.Errorf("%s waits for %s with %q", name, n, c)
			}
		}
		if !strings.HasSuffix(svc.Volumes[0], ":/secrets:ro") {
			t.Errorf("%s mounts %v: the keys must be read-only to an instance", name, svc.Volumes)
		}
		env := append(containerEnv(svc), "KEYLEDGER_HTTP_ADDR="+instances[name])
		p := serveProcess(t, root, instances[name], env)
		check := svc.Healthcheck.Test
		if len(check) < 3 || check[0] != "CMD" || filepath.Base(check[1]) != "keyledger" {
			t.Fatalf("%s's health check is %v", name, check)
		}
		args := append([]string{}, check[2:]...)
		args[len(args)-1] = p.url
		if out, stderr, err := runBinary(t, root, nil, args...); err != nil {
			t.Fatalf("%s's health check: %v %s %s", name, err, out, stderr)
		}
	}

	// Step 3: bootstrap, a key made on one instance and verified on the other.
	one := services["keyledger-1"]
	run := "env " + strings.Join(containerEnv(one), " ") + " " + binary
	steps := strings.ReplaceAll(readmeBlock(t, readme, "production-steps"), "docker compose run --rm -T keyledger-1", run)
	out := bash(adapt(steps) + "\necho \"$ADMIN\"\n")
	t.Logf("production steps:\n%s", out)
	for _, want := range []string{`"valid":true,"code":"VALID"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("the production steps' output lacks %s", want)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	admin := lines[len(lines)-1]
	urls := urls(nodes)

	t.Run("AnonymousClientIsRefused", func(t *testing.T) {
		nc, err := nats.Connect(urls, nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatal("an anonymous client connected to the deploy/ configuration")
		}
		if !strings.Contains(err.Error(), "Authorization Violation") {
			t.Fatalf("anonymous: %v, want an authorization violation", err)
		}
	})
	t.Run("RouteWithoutTheRouteCredentialIsRefused", func(t *testing.T) {
		addr := adapt("nats-1:6222")
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		r := bufio.NewReader(conn)
		if info, _ := r.ReadString('\n'); !strings.Contains(info, `"auth_required":true`) {
			t.Fatalf("the route port's INFO asks for no credential: %s", info)
		}
		fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"name\":\"intruder\",\"cluster\":\"keyledger\"}\r\nPING\r\n")
		reply, _ := r.ReadString('\n')
		if !strings.Contains(reply, "Authorization Violation") {
			t.Fatalf("a route without the route credential got %q", reply)
		}
	})
	t.Run("MonitoringIsOnLoopbackOnly", func(t *testing.T) {
		for _, name := range natsNames {
			raw, _ := os.ReadFile(filepath.Join("..", "..", "deploy", name+".conf"))
			if !regexp.MustCompile(`(?m)^http: 127\.0\.0\.1:8222$`).Match(raw) {
				t.Errorf("deploy/%s.conf does not keep monitoring on 127.0.0.1", name)
			}
		}
	})
	sub, err := nats.Connect(urls, subscriberOptions(t, filepath.Join(secrets, "keyledger-subscriber.nk"))...)
	if err != nil {
		t.Fatalf("the read-only credential: %v", err)
	}
	defer sub.Close()
	js, _ := jetstream.NewWithDomain(sub, events.SubscriberDomain)
	stream, err := js.Stream(context.Background(), "KEYLEDGER")
	if err != nil {
		t.Fatalf("the read-only credential reads no stream info: %v", err)
	}
	if info := stream.CachedInfo(); info.Config.Replicas != 3 {
		t.Fatalf("KEYLEDGER has %d replicas, want 3", info.Config.Replicas)
	}

	t.Run("WritesResumeAfterTheStreamLeaderIsKilled", func(t *testing.T) {
		info, err := stream.Info(context.Background())
		if err != nil || info.Cluster == nil {
			t.Fatalf("stream info: %v", err)
		}
		var leader *natsNode
		for _, n := range nodes {
			if n.name == info.Cluster.Leader {
				leader = n
			}
		}
		if leader == nil {
			t.Fatalf("no stream leader among the nodes: %q", info.Cluster.Leader)
		}
		leader.kill()
		killed := time.Now()
		deadline := killed.Add(60 * time.Second)
		for i := 0; ; i++ {
			from, to := instances["keyledger-1"], instances["keyledger-2"]
			if i%2 == 1 {
				from, to = to, from
			}
			secret, seq, err := createKey(admin, from)
			if err == nil {
				if code := verifyAt(t, to, secret, seq); code != "VALID" {
					t.Fatalf("a key made after the kill verifies %s on the other instance", code)
				}
				t.Logf("writes resumed %s after the SIGKILL of %s, the stream leader", time.Since(killed).Round(time.Millisecond), leader.name)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no write within 60 s of killing the stream leader: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("InitMakesNoKeyInPlaceOfALostOne", func(t *testing.T) {
		key := filepath.Join(secrets, "signing-key.pem")
		before, _ := os.ReadFile(key)
		if stderr, err := provision(); err != nil || !strings.Contains(stderr, "kept the signing key") {
			t.Fatalf("a second keyledger-init: %v %s", err, stderr)
		}
		if after, _ := os.ReadFile(key); string(after) != string(before) {
			t.Fatal("a second keyledger-init changed the signing key")
		}
		if err := os.Rename(key, key+".lost"); err != nil {
			t.Fatal(err)
		}
		stderr, err := provision()
		if err == nil || !strings.Contains(stderr, "the deployment's signing key is lost") {
			t.Fatalf("keyledger-init without the key: %v %s", err, stderr)
		}
		if _, err := os.Stat(key); err == nil {
			t.Fatal("keyledger-init made a new signing key in place of the lost one")
		}
	})
}

// natsServerVersion is go.mod's nats-server version, without the v.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`github.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("go.mod pins no nats-server")
	}
	return string(m[1])
}

// startLogged starts n with its log in logFile, shown when the test fails.
func startLogged(t *testing.T, n *natsNode, bin, logFile string) {
	t.Helper()
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); f.Close() }()
	t.Cleanup(func() {
		n.kill()
		if t.Failed() {
			raw, _ := os.ReadFile(logFile)
			lines := strings.Split(string(raw), "\n")
			t.Logf("%s's log, the end:\n%s", n.name, strings.Join(lines[max(0, len(lines)-25):], "\n"))
		}
	})
}

func waitHealthy(t *testing.T, name, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := http.Get(url)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's health check %s did not pass within 60 s: %v", name, url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func subscriberOptions(t *testing.T, seed string) []nats.Option {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return []nats.Option{opt, nats.CustomInboxPrefix("_INBOX_keyledger_subscriber"), nats.NoReconnect()}
}

// createKey makes a key on the instance at addr: its secret and the
// stream sequence of its event.
func createKey(admin, addr string) (string, uint64, error) {
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/orgs/acme/keys", strings.NewReader(`{"name":"after the kill"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", 0, err
	}
	defer res.Body.Close()
	var out struct {
		Key    struct{ Version uint64 }
		Secret string
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusCreated {
		return "", 0, fmt.Errorf("create: %s %v", res.Status, err)
	}
	return out.Secret, out.Key.Version, nil
}

// verifyAt verifies secret at addr once that instance has applied seq.
func verifyAt(t *testing.T, addr, secret string, seq uint64) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Post(fmt.Sprintf("http://%s/v1/verify?min_seq=%d", addr, seq), "application/json", strings.NewReader(`{"key":"`+secret+`"}`))
		if err == nil {
			var v struct{ Code string }
			_ = json.NewDecoder(res.Body).Decode(&v)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return v.Code
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify at %s did not answer within 30 s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
