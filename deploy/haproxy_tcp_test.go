package deploy_test

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// TestHAProxyProxyProtocol runs deploy/haproxy-tcp.cfg, HAProxy in TCP mode
// in front of one wsbridge node, as committed (send-proxy-v2) and with
// send-proxy (v1). The clients dial from 127.0.0.5 and 127.0.0.6, not
// HAProxy's own 127.0.0.1, and send a forged X-Forwarded-For: the backend's
// GET must carry their real address, the admin info their address and
// port, and -max-conns-per-ip must count them, not the proxy.
func TestHAProxyProxyProtocol(t *testing.T) {
	tools := requireTools(t, "haproxy")
	t.Parallel()
	bin := wsbridgeBinary(t)
	be, err := backend.Start(backend.Options{Record: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = be.Close() })
	ws, adm := freeLoopbackPort(t), freeLoopbackPort(t)
	ready := make(chan struct{})
	var once sync.Once
	node := startProcess(t, "wsbridge", func(line string) {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "wsbridge listening" {
			once.Do(func() { close(ready) })
		}
	}, bin, "-listen", ws, "-admin", adm, "-backend", be.URL,
		"-trusted-proxies", "127.0.0.1/32", "-max-conns-per-ip", "1", "-loops", "1", "-log-level", "info")
	select {
	case <-ready:
	case <-node.exited:
		t.Fatalf("wsbridge exited at start: %v\n%s", node.err, node.out)
	case <-time.After(20 * time.Second):
		t.Fatalf("wsbridge did not start:\n%s", node.out)
	}
	_, admPort, _ := net.SplitHostPort(adm)

	for _, tc := range []struct{ variant, src, other string }{
		{"send-proxy-v2", "127.0.0.5", "127.0.0.6"},
		{"send-proxy", "127.0.0.7", "127.0.0.8"},
	} {
		variant := tc.variant
		t.Run(variant, func(t *testing.T) {
			dir := testDir(t)
			pem, pool := writeCert(t, dir)
			wss, stats := freeLoopbackPort(t), freeLoopbackPort(t)
			pairs := []string{
				"*:443", wss,
				"/etc/haproxy/certs/wsbridge.pem", pem,
				"/run/haproxy/wsbridge-tcp.sock", filepath.Join(dir, "haproxy.sock"),
				"10.0.0.10:8404", stats,
				"10.0.0.11:7001", ws,
				"port 7002", "port " + admPort,
				"maxconn 200000", "maxconn 4000",
				"maxconn 100000", "maxconn 2000",
			}
			if variant == "send-proxy" {
				pairs = append(pairs, " send-proxy-v2\n", " send-proxy\n")
			}
			if os.Geteuid() != 0 {
				pairs = append(pairs, "    user haproxy\n", "", "    group haproxy\n", "", "    chroot /var/lib/haproxy\n", "")
			}
			cfg := render(t, "haproxy-tcp.cfg", dir, pairs...)
			if out, err := exec.Command(tools["haproxy"], "-c", "-f", cfg).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c: %v\n%s", err, out)
			}
			startProcess(t, "haproxy", nil, tools["haproxy"], "-f", cfg, "-db")
			waitHAStatus(t, stats, 15*time.Second, map[string]string{"wsbridge/node1": "UP"})

			dial := func(src, id string) (*websocket.Conn, *http.Response, error) {
				d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
				wd := &websocket.Dialer{
					NetDialContext:   d.DialContext,
					TLSClientConfig:  &tls.Config{RootCAs: pool, ServerName: "localhost"},
					HandshakeTimeout: 10 * time.Second,
				}
				return wd.Dial("wss://"+wss+"/"+id, clientHeader())
			}
			id := "pp-" + variant
			c, _, err := dial(tc.src, id)
			if err != nil {
				t.Fatalf("upgrade through HAProxy: %v", err)
			}
			defer c.Close()
			var get *backend.Call
			for _, call := range be.Calls(id) {
				if call.Method == "GET" {
					get = &call
				}
			}
			if get == nil {
				t.Fatalf("no GET recorded for %s", id)
			}
			if got := get.Header["X-Forwarded-For"]; got != tc.src {
				t.Fatalf("X-Forwarded-For of the GET: got %q, want %q (the client's address from the PROXY header)", got, tc.src)
			}
			_, info, err := adminGet(adm, "/"+id)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				RemoteAddr string `json:"remote_addr"`
			}
			if err := json.Unmarshal([]byte(info), &got); err != nil {
				t.Fatalf("info %q: %v", info, err)
			}
			if want := c.UnderlyingConn().LocalAddr().String(); got.RemoteAddr != want {
				t.Fatalf("remote_addr: got %q, want %q (the client's socket)", got.RemoteAddr, want)
			}
			if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "hi" {
				t.Fatalf("echo: got %q, %v, want hi", msg, err)
			}

			// -max-conns-per-ip 1 counts the client, not HAProxy.
			_, resp, err := dial(tc.src, id+"-second")
			if err == nil || resp == nil || resp.StatusCode != 429 {
				t.Fatalf("second upgrade from %s: got %v (%v), want 429", tc.src, respStatus(resp), err)
			}
			c2, _, err := dial(tc.other, id+"-other")
			if err != nil {
				t.Fatalf("upgrade from another address: %v", err)
			}
			c2.Close()
		})
	}
}

func respStatus(r *http.Response) string {
	if r == nil {
		return "no response"
	}
	return strconv.Itoa(r.StatusCode) + " " + strings.TrimSpace(http.StatusText(r.StatusCode))
}
