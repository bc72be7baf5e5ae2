// Command wsbridge holds WebSocket clients on a few event loops and turns
// every connection event into an HTTP call to an ordinary API backend.
//
//	wsbridge -backend http://127.0.0.1:8000/      # your API
//	wsbridge -demo                                # built-in echo backend
//
// Every flag is also read from WSBRIDGE_<FLAG_IN_CAPS>; flags win. See the
// README for the backend protocol and the admin API.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/wsbridge/wsbridge/bridge/journal"
)

func main() {
	opts, err := parseOptions(os.Args[1:], os.Environ())
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wsbridge: %v\n", err)
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		fmt.Fprintf(os.Stderr, "wsbridge: %v\n", err)
		if errors.Is(err, journal.ErrLocked) {
			// A configuration error, as a bad flag: another live process
			// (a -reuseport sibling?) holds the -journal directory.
			os.Exit(2)
		}
		os.Exit(1)
	}
}
