package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// ownsProcess is set by main when this process runs serve or worker for
// its whole life. Tests call realMain in their own process, serve and
// worker side by side; there the worker must not lower the priority of
// the whole test process, so it leaves it alone unless this is set.
var ownsProcess bool

// lowerPriority sets every thread of this process whose nice value is
// below n to n, until a pass finds none below it (a thread started during
// a pass may have copied its creator's old value), and returns the lowest
// nice value the threads have then and how many threads there are.
//
// It sets the worker's CPU priority. Where serve and worker share a machine's
// cores, both want them whole under load, and intake is the part that
// answers a FHIR server waiting on the line; a stored event waits safely
// for the worker. So the worker lowers its own priority
// (TIDINGS_WORKER_NICE, 10 by default): the kernel then gives serve the
// cores first, and the worker what is left, which is all of them once
// intake is quiet. With nothing else running a lower priority costs
// nothing. In interleaved load runs (the README's Performance section)
// intake took about a quarter more notifications a second with it, and
// its p99 at a steady 1,000/s was lower in each pair; the price was 5-9%
// of the end-to-end rate in that open loop, as intake, answered sooner,
// commits smaller groups.
//
// On Linux a nice value belongs to a thread, not to the process, and a
// new thread takes its creator's: lowerPriority sets it on every thread
// the process has, and the threads the Go runtime starts later inherit
// it. It only ever lowers a priority: a worker started with a higher nice
// value (nice -n 15 tidings worker) keeps that.
//
// The kernel weighs nice values only within one scheduling group (one
// session under autogroup, or one cgroup): serve and worker in separate
// containers or services are weighed by their groups' CPU weights, which
// compose.yaml sets for the worker.
func lowerPriority(n int) (lowest, threads int, err error) {
	for pass := 0; pass < 5; pass++ {
		changed := 0
		lowest, threads = 19, 0
		tids, err := threadIDs("self")
		if err != nil {
			return 0, 0, err
		}
		for _, tid := range tids {
			nice, err := threadNice(tid)
			if err != nil {
				continue // the thread has exited
			}
			if nice < n {
				if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil {
					return 0, 0, fmt.Errorf("setpriority(thread %d, %d): %w", tid, n, err)
				}
				changed++
				nice = n
			}
			lowest, threads = min(lowest, nice), threads+1
		}
		if changed == 0 {
			return lowest, threads, nil
		}
	}
	return lowest, threads, nil
}

// threadIDs lists the threads of process pid ("self" for this one).
func threadIDs(pid string) ([]int, error) {
	dir, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(dir))
	for _, d := range dir {
		if tid, err := strconv.Atoi(d.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// threadNice is a thread's nice value. The system call answers 20 minus
// it, so that its answer is never negative.
func threadNice(tid int) (int, error) {
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	return 20 - p, err
}
