// Command wscat is a tiny interactive WebSocket client for trying wsbridge:
// each line typed is sent as a text message, each message received is
// printed.
//
//	go run ./cmd/wscat ws://localhost:7001/alice
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wscat ws://host:port/<ClientId>")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	conn, _, _, err := ws.Dial(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "wscat:", err)
		os.Exit(1)
	}
	defer conn.Close()
	fmt.Fprintln(os.Stderr, "connected; type a line to send it, Ctrl-D to close")
	go func() {
		for {
			msg, op, err := wsutil.ReadServerData(conn)
			if err != nil {
				fmt.Fprintln(os.Stderr, "wscat: closed:", err)
				os.Exit(0)
			}
			if op == ws.OpBinary {
				fmt.Printf("< (binary) %x\n", msg)
			} else {
				fmt.Printf("< %s\n", msg)
			}
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if err := wsutil.WriteClientText(conn, in.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "wscat:", err)
			os.Exit(1)
		}
	}
	_ = wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"))
}
