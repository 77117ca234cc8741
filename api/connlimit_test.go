package api

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// Over the bound, a connection is not served until an open one closes:
// it waits to be accepted rather than costing serve its goroutine.
func TestConnectionsAreBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, LimitConnections(ln, 2), ok, slog.New(slog.DiscardHandler)) }()
	defer func() { cancel(); <-served }()
	addr := ln.Addr().String()
	// get sends a request on c and reads the start of its answer, waiting
	// up to wait.
	get := func(c net.Conn, wait time.Duration) error {
		c.SetDeadline(time.Now().Add(wait))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		buf := make([]byte, 64)
		_, err := c.Read(buf)
		return err
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := get(c, 10*time.Second); err != nil {
			t.Fatalf("a connection within the bound: %v", err)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr) // the kernel completes the handshake
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if err := get(third, 300*time.Millisecond); err == nil {
		t.Fatal("a third connection was served while two were open (bound 2)")
	}
	held[0].Close()
	third.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, err := third.Read(buf); err != nil || n == 0 {
		t.Fatalf("after one closed, the waiting connection was not served: %v", err)
	}
}
