// Package deploy holds no code: it is the home of the files that put
// wsbridge behind a load balancer and under monitoring, and of the tests
// that run them for real.
//
//   - haproxy.cfg: TLS termination, consistent hashing by ClientId for the
//     WebSocket and the push traffic, /readyz health checks, an Origin
//     allow-list, X-Forwarded-For.
//   - nginx.conf: the same for nginx open source (passive health checks).
//   - haproxy-tcp.cfg: HAProxy in TCP mode for one node, the client's
//     address passed with the PROXY protocol (send-proxy-v2), as a cloud
//     network load balancer would; haproxy_tcp_test.go runs it with v2 and
//     v1.
//   - prometheus/wsbridge.rules.yml: alert rules, with promtool unit tests
//     in prometheus/wsbridge.rules.test.yml.
//   - grafana/wsbridge.json: a dashboard over wsbridge's metrics.
//
// deploy_test.go starts three wsbridge nodes, a mock backend and the real
// haproxy or nginx from the committed files (addresses replaced by loopback
// ones), and checks hashing, pushes, a node killed and a node drained.
// prometheus_test.go runs promtool over the rules and checks the
// dashboard. Both skip when the tools are missing, unless CI=true.
// docs/scaling.md explains the choices.
package deploy
