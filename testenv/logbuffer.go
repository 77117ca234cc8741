package testenv

import (
	"bytes"
	"sync"
)

// LogBuffer collects what a logger writes from other goroutines, for tests
// that grep the logs (PHI canaries, expected warnings).
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
