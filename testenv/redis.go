package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const redisPrefix = "tidings-redis-"

// RedisOptions tune a Redis server.
type RedisOptions struct {
	// AppendOnly keeps data across Stop and Restart in an append-only file
	// (for `tidings dev`). Off, the server keeps nothing on disk: a Restart
	// comes back empty, like a Redis that was lost.
	AppendOnly bool
}

// Redis is a redis-server of our own on Addr (127.0.0.1 and a free port),
// working in Dir.
type Redis struct {
	Addr string
	Dir  string // kept by Stop so Restart can reuse it; removed by Close
	Log  string // server log file, inside Dir

	bin  string
	port int
	opts RedisOptions

	mu     sync.Mutex
	srv    *child
	closed bool
}

// StartRedis starts redis-server in a new folder under dir ("" for
// os.TempDir()) on a free loopback port and returns once it answers PING.
// The server is our child process and dies when this process does.
func StartRedis(ctx context.Context, dir string, opts RedisOptions) (*Redis, error) {
	bin, err := findRedis(os.Getenv("PATH"), redisFallbacks)
	if err != nil {
		return nil, err
	}
	base, err := makeDir(dir, redisPrefix)
	if err != nil {
		return nil, err
	}
	r := &Redis{Dir: base, Log: filepath.Join(base, "redis.log"), bin: bin, opts: opts}
	for try := 1; ; try++ {
		if r.port, err = freePort(); err != nil {
			break
		}
		r.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))
		err = r.start(ctx)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, errExited) || !addrInUse(logTail(r.Log, 5)) || try >= portTries {
			break
		}
	}
	_ = r.Close()
	return nil, err
}

func (r *Redis) args() []string {
	appendOnly := "no"
	if r.opts.AppendOnly {
		appendOnly = "yes"
	}
	return []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(r.port),
		"--dir", r.Dir,
		"--save", "",
		"--appendonly", appendOnly,
		"--maxmemory-policy", "noeviction",
		"--daemonize", "no",
		"--databases", strconv.Itoa(redisDBs),
		"--logfile", "", // stdout, which startChild sends to r.Log
	}
}

// start runs the server on r.port and waits for PING; r.mu must not be held.
func (r *Redis) start(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	srv, err := startChild(r.bin, r.args(), childEnv(), r.Dir, r.Log, nil, syscall.SIGKILL)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	if err := waitReady(ctx, srv, func(ctx context.Context) error { return ping(ctx, r.Addr) }); err != nil {
		srv.stop(0)
		return fmt.Errorf("testenv: redis on %s: %w; server log %s ends with:\n%s", r.Addr, err, r.Log, logTail(r.Log, 20))
	}
	return nil
}

// ping sends PING and expects PONG; a server still loading its append-only
// file answers -LOADING and is not ready yet.
func ping(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Stop ends the server (SIGTERM, then SIGKILL to its process group after 5s)
// and waits until it is gone. Dir stays, so Restart can bring the same server
// back. Calling it on a stopped server does nothing.
func (r *Redis) Stop() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		r.srv.stop(5*time.Second, syscall.SIGTERM)
		r.srv = nil
	}
	return nil
}

// Restart stops the server if it runs and starts it again on the same port
// and folder, so clients configured with Addr reconnect to it.
func (r *Redis) Restart(ctx context.Context) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return fmt.Errorf("testenv: restart redis: %w", errClosed)
	}
	if err := r.Stop(); err != nil {
		return err
	}
	return r.start(ctx)
}

// errClosed means Restart was called after Close removed the server's folder.
var errClosed = errors.New("server closed")

// Close stops the server and removes Dir. Calling it again does nothing.
func (r *Redis) Close() error {
	if err := r.Stop(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if err := os.RemoveAll(r.Dir); err != nil {
		return fmt.Errorf("testenv: remove redis folder: %w", err)
	}
	return nil
}

// PID is the server's process id (0 while stopped), for reading what the
// server costs from /proc.
func (r *Redis) PID() int { return r.pid() }

// pid is the server's process id (0 while stopped).
func (r *Redis) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv == nil {
		return 0
	}
	return r.srv.pid()
}
