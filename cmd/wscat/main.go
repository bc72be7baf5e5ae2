// Command wscat is a tiny interactive WebSocket client for trying wsbridge:
// each line typed is sent as a text message, each message received is
// printed. Ctrl-D (the end of stdin) closes the connection with 1000 and
// waits for the server's reply; a close the server starts is shown with its
// code and reason. The exit status is 0 after a close handshake, 1 when the
// connection is lost or cannot be made.
//
//	go run ./cmd/wscat ws://localhost:7001/alice
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// closeWait bounds the wait for the server's reply to our close.
const closeWait = 5 * time.Second

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: wscat ws://host:port/<ClientId>")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	conn, br, _, err := ws.Dial(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "wscat:", err)
		os.Exit(1)
	}
	// Frames the server sent right behind its 101 may already be in br.
	var in io.Reader = conn
	if br != nil {
		in = io.MultiReader(br, conn)
	}
	var closing atomic.Bool // our close frame is sent
	// Control frames the reader answers go to the socket, except once our
	// close is sent: the server's reply to it needs no echo.
	rw := struct {
		io.Reader
		io.Writer
	}{in, quietAfterClose{conn, &closing}}
	done := make(chan int, 1) // exit status, once the reader ends
	fmt.Fprintln(os.Stderr, "connected; type a line to send it, Ctrl-D to close")
	go func() {
		for {
			msg, op, err := wsutil.ReadServerData(rw)
			if err != nil {
				status := report(err, closing.Load())
				if !closing.Load() {
					os.Exit(status)
				}
				done <- status
				return
			}
			if op == ws.OpBinary {
				fmt.Printf("< (binary) %x\n", msg)
			} else {
				fmt.Printf("< %s\n", msg)
			}
		}
	}()
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		if err := wsutil.WriteClientText(conn, lines.Bytes()); err != nil {
			fmt.Fprintln(os.Stderr, "wscat:", err)
			os.Exit(1)
		}
	}
	// Ctrl-D: close, and wait for the server's close reply.
	closing.Store(true)
	if err := wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")); err != nil {
		fmt.Fprintln(os.Stderr, "wscat:", err)
		os.Exit(1)
	}
	select {
	case status := <-done:
		os.Exit(status)
	case <-time.After(closeWait):
		fmt.Fprintf(os.Stderr, "wscat: no close reply from the server in %v\n", closeWait)
		os.Exit(1)
	}
}

// report prints how the connection ended and returns the exit status: 0
// for a close handshake, 1 for a lost connection.
func report(err error, ours bool) int {
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) {
		fmt.Fprintln(os.Stderr, "wscat: connection lost:", err)
		return 1
	}
	by := ""
	if !ours {
		by = " by the server"
	}
	if ce.Reason == "" {
		fmt.Fprintf(os.Stderr, "wscat: closed%s (%d)\n", by, ce.Code)
	} else {
		fmt.Fprintf(os.Stderr, "wscat: closed%s (%d %s)\n", by, ce.Code, ce.Reason)
	}
	return 0
}

// quietAfterClose writes to w until closing is set, then drops writes.
type quietAfterClose struct {
	w       io.Writer
	closing *atomic.Bool
}

func (q quietAfterClose) Write(p []byte) (int, error) {
	if q.closing.Load() {
		return len(p), nil
	}
	return q.w.Write(p)
}
