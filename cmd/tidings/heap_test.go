package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

// TestHeapLimitsFollowTheMedian: the limit is the heap GOGC allows for the
// median live heap plus the runtime's other memory; one collection that
// finds the live heap doubled does not raise it; a lasting rise does,
// within half the window; and it never drops below the floor.
func TestHeapLimitsFollowTheMedian(t *testing.T) {
	const mib = 1 << 20
	const nonHeap = 10 * mib
	var h heapLimits
	if got := h.observe(1*mib, nonHeap, 200); got != heapLimitFloor {
		t.Errorf("first small heap: limit %d, want the floor %d", got, heapLimitFloor)
	}
	for range heapWindow {
		h.observe(12*mib, nonHeap, 200)
	}
	if got, want := h.observe(24*mib, nonHeap, 200), int64(3*12*mib+nonHeap); got != want {
		t.Errorf("a passing peak of 24 MiB: limit %d MiB, want %d", got/mib, want/mib)
	}
	if got, want := h.observe(12*mib, nonHeap, 100), int64(2*12*mib+nonHeap); got != want {
		t.Errorf("GOGC=100: limit %d MiB, want %d", got/mib, want/mib)
	}
	var got int64
	n := 0
	for got < 3*40*mib {
		got = h.observe(40*mib, nonHeap, 200)
		n++
		if n > heapWindow {
			t.Fatalf("a lasting 40 MiB live heap: limit still %d MiB after %d collections", got/mib, n)
		}
	}
	if n > heapWindow/2+1 {
		t.Errorf("a lasting rise took %d collections to raise the limit, want at most %d", n, heapWindow/2+1)
	}
	if len(h.live) != heapWindow {
		t.Errorf("window holds %d collections, want %d", len(h.live), heapWindow)
	}
}

// TestGovernHeapSetsTheLimit runs the governor in this process: after a
// collection it sets a soft memory limit, and once its context ends it
// leaves the limit alone.
func TestGovernHeapSetsTheLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { governHeap(ctx, time.Millisecond); close(done) }()
	runtime.GC()
	deadline := time.Now().Add(10 * time.Second)
	for debug.SetMemoryLimit(-1) == before {
		if time.Now().After(deadline) {
			t.Fatal("the governor set no memory limit within 10 s of a collection")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	const sentinel = 1 << 40
	debug.SetMemoryLimit(sentinel)
	runtime.GC()
	time.Sleep(20 * time.Millisecond) // twenty of its intervals
	if got := debug.SetMemoryLimit(-1); got != sentinel {
		t.Errorf("after its context ended the governor set the limit to %d", got)
	}
}
