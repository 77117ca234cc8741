package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// With TIDINGS_HEALTH_ADDR, serve answers its probes there while every
// connection its main address may hold is taken: an overloaded serve's
// readiness does not wait in the accept queue behind the senders.
func TestServeHealthAddrAnswersWhileConnectionsAreFull(t *testing.T) {
	listen, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	health, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	env := serviceEnv(t)
	env["TIDINGS_LISTEN_ADDR"], env["TIDINGS_HEALTH_ADDR"] = listen, health
	env["TIDINGS_MAX_IN_FLIGHT"], env["TIDINGS_MAX_CONNECTIONS"] = "1", "2"
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- realMain(ctx, []string{"serve"}, io.Discard, io.Discard) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	client := &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	ready := func(addr string) error {
		resp, err := client.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", addr, resp.Status)
		}
		return nil
	}
	for deadline := time.Now().Add(20 * time.Second); ready(listen) != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("serve never became ready on its main address")
		}
	}
	// Take both connections the main address may hold; each is served
	// once, so that serve has surely accepted it, and then stays open.
	for range 2 {
		c, err := net.Dial("tcp", listen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 64)); err != nil {
			t.Fatalf("a connection within the bound: %v", err)
		}
	}
	if err := ready(listen); err == nil {
		t.Fatal("the main address answered a third connection while two were open (bound 2)")
	}
	if err := ready(health); err != nil {
		t.Fatalf("TIDINGS_HEALTH_ADDR did not answer while the main address was full: %v", err)
	}
}
