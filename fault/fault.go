// Package fault owns Tidings' one error type: an error with a Code that says
// what kind of failure it is (invalid input, not found, conflict, …) and a
// message fit to show the client. Domain packages create and wrap errors with
// codes; the HTTP layer maps each code to a status in one table and shows the
// message. Messages name fields, rules and ids, never patient data.
package fault

import (
	"errors"
	"fmt"
)

// Code is the kind of a failure. A Code is itself an error, so callers can
// test a kind with errors.Is(err, fault.NotFound).
type Code string

// The codes. Each maps to one HTTP status (see api's status table).
const (
	Invalid          Code = "invalid"           // the request is malformed or breaks a rule the client can fix
	Unauthorized     Code = "unauthorized"      // no or wrong credentials
	Forbidden        Code = "forbidden"         // credentials fine, action not allowed
	NotFound         Code = "not-found"         // no such thing (in this tenant)
	Conflict         Code = "conflict"          // exists already, or the state does not allow it
	TooLarge         Code = "too-large"         // the body or a part of it is over its limit
	UnsupportedMedia Code = "unsupported-media" // a Content-Type the endpoint does not take
	Unprocessable    Code = "unprocessable"     // well-formed, but not something Tidings can act on
	Unsupported      Code = "not-supported"     // valid, but asks for what this version does not do
	Throttled        Code = "throttled"         // over a rate or concurrency limit
	Upstream         Code = "upstream"          // a server Tidings depends on failed
	Unavailable      Code = "unavailable"       // this process cannot do it now
	Internal         Code = "internal"          // anything else; its detail is never shown
)

func (c Code) Error() string { return string(c) }

// Error is a failure with a code and a message for the client. Err, when
// set, is the cause (kept for errors.Is/As and server logs).
type Error struct {
	Code Code
	Msg  string
	Err  error

	formatted bool // Msg is Err's own text (Errorf)
}

func (e *Error) Error() string {
	switch {
	case e.Err == nil, e.formatted:
		return e.Msg
	case e.Msg == "":
		return e.Err.Error()
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap exposes the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches the error's Code, so errors.Is(err, fault.NotFound) holds for
// any *Error with that code in err's chain.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// FaultCode and FaultMessage make *Error a Coded error.
func (e *Error) FaultCode() Code      { return e.Code }
func (e *Error) FaultMessage() string { return e.Msg }

// Coded is an error that carries its code and client message itself;
// *Error is one, and a package may give its own error types these two
// methods instead of wrapping them.
type Coded interface {
	error
	FaultCode() Code
	FaultMessage() string
}

// New returns an error with a code and a client message.
func New(code Code, msg string) *Error { return &Error{Code: code, Msg: msg} }

// Errorf is New with a formatted message; %w verbs keep their operands as
// causes.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: err, formatted: true}
}

// Wrap gives err a code and a client message, keeping err as the cause;
// nil stays nil.
func Wrap(err error, code Code, msg string) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Msg: msg, Err: err}
}

// CodeOf is the code of the outermost Coded error in err's chain; Internal when
// there is none (an error nobody classified is never shown to a client).
func CodeOf(err error) Code {
	var e Coded
	if errors.As(err, &e) {
		return e.FaultCode()
	}
	return Internal
}

// MessageOf is the client message of the outermost Coded error in err's chain,
// or a generic one for Internal errors (whose text may hold internals).
func MessageOf(err error) string {
	var e Coded
	if errors.As(err, &e) && e.FaultCode() != Internal {
		if msg := e.FaultMessage(); msg != "" {
			return msg
		}
		return string(e.FaultCode())
	}
	return "internal error; the request was not processed"
}
