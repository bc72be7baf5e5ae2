// Command wsbench is wsbridge's load generator: it holds its connections on
// a few epoll event loops (no goroutine per connection), spreads them over
// many 127.0.x.y source addresses, forks worker processes past 19,000
// connections, and reports a table and one JSON line per run.
//
//	wsbench throughput -url ws://127.0.0.1:7001 -backend 127.0.0.1:8000
//	wsbench backend -listen 127.0.0.1:8000
//
// See bench/doc.go for the scenarios and `wsbench -h` for the flags.
package main

import (
	"os"

	"github.com/wsbridge/wsbridge/bench"
)

func main() {
	os.Exit(bench.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
