package main

// ownsProcess is set by main when this process runs serve or worker for
// its whole life. Tests call realMain in their own process, serve and
// worker side by side; there the worker must not lower the priority of
// the whole test process, so it leaves it alone unless this is set.
var ownsProcess bool

// The worker's CPU priority. Where serve and worker share a machine's
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
