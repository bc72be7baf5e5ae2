package deploy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestHAProxyCluster runs deploy/haproxy-cluster.cfg (round-robin and
// leastconn, no hashing) in front of three wsbridge nodes joined by a real
// nats-server (-cluster): clients land on every node, and a push to each
// of them succeeds through the balancer's push frontend and through every
// node's admin API directly.
func TestHAProxyCluster(t *testing.T) {
	tools := requireTools(t, "haproxy", "nats-server")
	t.Parallel()
	bin := wsbridgeBinary(t)
	be, err := backend.Start(backend.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })

	natsAddr := freeLoopbackPort(t)
	host, port, _ := strings.Cut(natsAddr, ":")
	startProcess(t, "nats-server", nil, tools["nats-server"], "-a", host, "-p", port)

	const nodes = 3
	var wsAddr, admAddr [nodes]string
	for i := range nodes {
		wsAddr[i], admAddr[i] = freeLoopbackPort(t), freeLoopbackPort(t)
		ready := make(chan struct{})
		var once sync.Once
		n := startProcess(t, "wsbridge", func(line string) {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "wsbridge listening" {
				once.Do(func() { close(ready) })
			}
		}, bin, "-listen", wsAddr[i], "-admin", admAddr[i], "-backend", be.URL,
			"-cluster", "nats://"+natsAddr, "-node-id", "node"+strconv.Itoa(i+1),
			"-trusted-proxies", "127.0.0.1/32", "-loops", "1", "-log-level", "info")
		select {
		case <-ready:
		case <-n.exited:
			t.Fatalf("wsbridge exited at start: %v\n%s", n.err, n.out)
		case <-time.After(20 * time.Second):
			t.Fatalf("wsbridge did not start:\n%s", n.out)
		}
	}
	for i := range nodes {
		waitFor(t, 20*time.Second, func() error {
			_, body, err := adminGet(admAddr[i], "/metrics")
			if err != nil {
				return err
			}
			if !strings.Contains(body, "\nwsbridge_cluster_up 1\n") {
				return fmt.Errorf("node%d not on the bus yet", i+1)
			}
			return nil
		})
	}

	dir := testDir(t)
	front, push, stats := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	pairs := []string{
		"*:443", front,
		"10.0.0.10:7002", push,
		"10.0.0.10:8404", stats,
		"default-server check port 7002 ", "default-server check ",
		"maxconn 200000", "maxconn 4000",
		"maxconn 100000", "maxconn 2000",
	}
	for i := range nodes {
		n := strconv.Itoa(i + 1)
		_, admPort, _ := strings.Cut(admAddr[i], ":")
		pairs = append(pairs,
			"10.0.0.1"+n+":7001", wsAddr[i]+" port "+admPort,
			"10.0.0.1"+n+":7002", admAddr[i])
	}
	cfg := render(t, "haproxy-cluster.cfg", dir, pairs...)
	startProcess(t, "haproxy", nil, tools["haproxy"], "-f", cfg, "-db")
	want := map[string]string{}
	for i := range nodes {
		want["wsbridge_ws/node"+strconv.Itoa(i+1)] = "UP"
		want["wsbridge_push/node"+strconv.Itoa(i+1)] = "UP"
	}
	waitHAStatus(t, stats, 20*time.Second, want)

	const clients = 30
	conns := make([]*websocket.Conn, clients)
	where := map[string]int{}
	for i := range clients {
		id := "rr-" + strconv.Itoa(i)
		c, _, err := websocket.DefaultDialer.Dial("ws://"+front+"/"+id, nil)
		if err != nil {
			t.Fatalf("upgrade %s through HAProxy: %v", id, err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
		status, body, err := adminGet(push, "/"+id)
		if err != nil || status != 200 {
			t.Fatalf("info %s through the push frontend: %d %q %v", id, status, body, err)
		}
		var info struct{ Node string }
		if err := json.Unmarshal([]byte(body), &info); err != nil || info.Node == "" {
			t.Fatalf("info %s: %q has no node", id, body)
		}
		where[info.Node]++
	}
	if len(where) != nodes {
		t.Fatalf("clients by node: %v, want every node used (no hashing)", where)
	}

	post := func(addr, id, msg string) int {
		resp, err := httpClient.Post("http://"+addr+"/"+id, "text/plain", strings.NewReader(msg))
		if err != nil {
			t.Fatalf("push %s via %s: %v", id, addr, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	targets := append([]string{push}, admAddr[:]...)
	for i, c := range conns {
		id := "rr-" + strconv.Itoa(i)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for _, addr := range targets {
			msg := id + " via " + addr
			if st := post(addr, id, msg); st != http.StatusOK {
				t.Fatalf("push %s via %s: %d, want 200", id, addr, st)
			}
			if _, got, err := c.ReadMessage(); err != nil || string(got) != msg {
				t.Fatalf("%s: got %q, %v, want %q", id, got, err, msg)
			}
		}
	}
	if st := post(push, "nobody", "m"); st != http.StatusNotFound {
		t.Fatalf("push to an id connected nowhere: %d, want 404", st)
	}
	t.Logf("clients by node: %v", where)
}
