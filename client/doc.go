// Package client is a small WebSocket client for wsbridge that users can
// embed: Dial connects and then keeps the connection up by itself.
//
// It reconnects with full-jitter exponential backoff (Backoff), honours the
// server's hints (Retry-After on a 503 refusal, "retry=N" in a 1012 close),
// stops when the server says so (4000 replaced, 4001 disconnected by the
// backend), and pings the server to notice a dead one (no frame within
// PongTimeout of a ping closes the socket and reconnects).
//
//	c, err := client.Dial(ctx, client.Options{
//		URL:       "ws://127.0.0.1:7001/user-42",
//		OnMessage: func(p []byte, binary bool) { fmt.Printf("%s\n", p) },
//		OnState:   func(ev client.Event) { log.Println(ev.State, ev.Code, ev.Err) },
//	})
//	if err != nil { ... }
//	defer c.Close()
//	_ = c.Send([]byte("hello"), false)
//
// Unlike the wsbench load generator, a Client spends a goroutine or two per
// connection, which is the right trade for an application holding a few.
// Backoff and OnClose are pure and are shared with wsbench's storm scenario.
package client
