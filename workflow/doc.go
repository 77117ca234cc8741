// Package workflow owns Tidings' notification workflows as data and as a
// state machine: parsing and validating definitions (email, sms and portal
// steps, fallbacks, the SMS window and its quiet time), send windows, the
// built-in workflows, and Advance, which turns a run's state and one input
// into the run's next state and the actions the worker must carry out.
//
// The package is pure: no database, no queue, no clock (time comes only from
// Input.Now) and no I/O beyond its embedded files, so the same state and input
// always give the same result and every rule can be tested in a table.
package workflow
