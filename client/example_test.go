package client_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/wsbridge/wsbridge/bridge"
	"github.com/wsbridge/wsbridge/client"
	"github.com/wsbridge/wsbridge/engine"
)

// A client that connects to a bridge, sends one message and prints the
// backend's reply. The bridge here runs in process in front of the
// built-in demo backend, which echoes every message.
func Example() {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() { _ = bridge.ServeDemo(ln) }()
	defer ln.Close()
	backend, _ := bridge.New(bridge.Config{Backend: "http://" + ln.Addr().String() + "/"})
	defer backend.Close()
	srv, _ := engine.New(engine.Config{Listen: "127.0.0.1:0", Loops: 1}, backend, engine.NewMetrics(), nil)
	if err := srv.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	replies := make(chan string, 1)
	opened := make(chan struct{}, 1)
	c, err := client.Dial(context.Background(), client.Options{
		URL:       "ws://" + srv.Addr() + "/user-42",
		OnMessage: func(p []byte, binary bool) { replies <- string(p) },
		OnState: func(ev client.Event) {
			if ev.State == client.StateOpen {
				opened <- struct{}{}
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	<-opened
	if err := c.Send([]byte("hello"), false); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case r := <-replies:
		fmt.Println(r)
	case <-time.After(10 * time.Second):
		fmt.Println("no reply")
	}
	// Output: hello
}
