package bench

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// localCluster is three nats-servers in this process, clustered over
// loopback routes as deploy/nats-*.conf clusters them (JetStream syncing
// every write), each with a loopback client port.
type localCluster struct {
	servers []*server.Server
	urls    []string
}

// freePorts returns n free loopback ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	return ports, nil
}

// startCluster starts the three servers and waits until each has routes
// to the others.
func startCluster(dir string) (*localCluster, error) {
	routePorts, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	routes := make([]string, 3)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	c := &localCluster{}
	for i := range 3 {
		opts := &server.Options{
			ServerName: fmt.Sprintf("nats-%d", i+1),
			Host:       "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("nats-%d", i+1)), SyncAlways: true,
			Cluster: server.ClusterOpts{Name: "keyledger", Host: "127.0.0.1", Port: routePorts[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			NoLog:   true, NoSigs: true,
		}
		s, err := server.NewServer(opts)
		if err != nil {
			c.stop()
			return nil, err
		}
		go s.Start()
		c.servers = append(c.servers, s)
	}
	for _, s := range c.servers {
		if !s.ReadyForConnections(10 * time.Second) {
			c.stop()
			return nil, fmt.Errorf("nats-server %s did not start", s.Name())
		}
		c.urls = append(c.urls, s.ClientURL())
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range c.servers {
		for s.NumRoutes() < 2 {
			if time.Now().After(deadline) {
				c.stop()
				return nil, fmt.Errorf("nats-server %s has %d routes, want 2", s.Name(), s.NumRoutes())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return c, nil
}

// connect opens a client connection over loopback, as serve's --nats-url
// does, to every server of the cluster.
func (c *localCluster) connect() (*nats.Conn, error) {
	return nats.Connect(strings.Join(c.urls, ","), nats.MaxReconnects(-1))
}

func (c *localCluster) stop() {
	for _, s := range c.servers {
		s.Shutdown()
	}
	for _, s := range c.servers {
		s.WaitForShutdown()
	}
}
