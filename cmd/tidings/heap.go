package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"slices"
	"time"
)

// lessGC lets serve and worker grow their heap to three times what is
// live between collections (GOGC=200) unless GOGC is set: their live heap
// is small (about 10 MiB), and at Go's default of 100 marking took 8-10% of
// their CPU under load. Unless GOMEMLIMIT is set (or GOGC is off), it
// also starts the heap governor, which keeps a passing peak of live memory
// from raising the heap that far.
func lessGC(ctx context.Context) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	// GOGC=off asks for no collection until a limit says so; a governed
	// limit would collect anyway.
	if os.Getenv("GOMEMLIMIT") == "" && os.Getenv("GOGC") != "off" {
		go governHeap(ctx, 100*time.Millisecond)
	}
}

// The heap governor. With GOGC=200 the next collection is due when the heap
// is three times what the last one found live. Under load the worker's
// live heap is about 10 MiB most of the time and briefly twice that while
// a batch is in hand; a collection that ends in such a moment lets the heap
// grow to 50-60 MiB before the next, and the process keeps that memory
// (peak RSS 95 MiB where 80 would do). Every 100 ms that saw a collection,
// the governor takes the live heap the last one found, and sets Go's soft
// memory limit to the heap GOGC allows for the median of the last
// heapWindow such samples, plus what the runtime holds besides the heap
// (stacks, metadata), and never below heapLimitFloor: a usual cycle is
// hardly touched, a passing peak is collected at the limit instead, and a
// lasting rise in the live heap (a tenant's large policy) raises the limit
// within heapWindow/2 samples, one to two seconds at the worker's rate of
// collection under load; until then Go's own limiter keeps collection under
// half the CPU. Setting GOMEMLIMIT, or GOGC=off, turns it off.
const (
	heapLimitFloor = 32 << 20
	heapWindow     = 16
)

// heapLimits turns live heap sizes, sampled after collections, into soft
// memory limits.
type heapLimits struct {
	live []uint64 // the last heapWindow, oldest first
}

// observe records the live heap the last collection found and returns the
// limit to set, given GOGC and the memory the runtime holds outside the
// heap.
func (h *heapLimits) observe(live, nonHeap uint64, gogc int64) int64 {
	if len(h.live) == heapWindow {
		h.live = h.live[1:]
	}
	h.live = append(h.live, live)
	sorted := slices.Sorted(slices.Values(h.live))
	median := sorted[len(sorted)/2]
	heap := median + median*uint64(max(gogc, 0))/100
	return max(int64(heap+nonHeap), heapLimitFloor)
}

// governHeap checks every interval whether a collection has run since the
// last check and, if one has, sets the soft memory limit; until ctx ends.
func governHeap(ctx context.Context, interval time.Duration) {
	samples := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/gogc:percent"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
	}
	var limits heapLimits
	var seen uint64
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		metrics.Read(samples)
		if cycles := samples[0].Value.Uint64(); cycles != seen {
			seen = cycles
			heap := samples[4].Value.Uint64() + samples[5].Value.Uint64() + samples[6].Value.Uint64() + samples[7].Value.Uint64()
			nonHeap := samples[3].Value.Uint64() - min(heap, samples[3].Value.Uint64())
			debug.SetMemoryLimit(limits.observe(samples[1].Value.Uint64(), nonHeap, int64(samples[2].Value.Uint64())))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
