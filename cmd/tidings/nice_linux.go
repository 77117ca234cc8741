package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// lowerPriority sets every thread of this process whose nice value is
// below n to n, until a pass finds none below it (a thread started during
// a pass may have copied its creator's old value), and returns the lowest
// nice value the threads have then and how many threads there are.
func lowerPriority(n int) (lowest, threads int, err error) {
	for pass := 0; pass < 5; pass++ {
		changed := 0
		lowest, threads = 19, 0
		tids, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return 0, 0, err
		}
		for _, d := range tids {
			tid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
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

// threadNice is a thread's nice value. The system call answers 20 minus
// it, so that its answer is never negative.
func threadNice(tid int) (int, error) {
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, tid)
	return 20 - p, err
}
