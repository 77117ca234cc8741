//go:build !linux

package main

import "errors"

// lowerPriority is not done outside Linux, where a nice value belongs to a
// thread as this code assumes; the worker runs at the priority it was
// started with.
func lowerPriority(n int) (lowest, threads int, err error) {
	return 0, 0, errors.New("lowering the worker's priority is done on Linux only; start it with nice instead")
}
