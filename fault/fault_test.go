package fault

import (
	"errors"
	"fmt"
	"testing"
)

func TestCodesThroughWrapping(t *testing.T) {
	base := New(NotFound, "no such workflow in this tenant")
	wrapped := fmt.Errorf("loading: %w", base)
	if !errors.Is(wrapped, NotFound) || errors.Is(wrapped, Conflict) {
		t.Fatalf("errors.Is by code failed: %v", wrapped)
	}
	if CodeOf(wrapped) != NotFound || MessageOf(wrapped) != "no such workflow in this tenant" {
		t.Fatalf("CodeOf/MessageOf = %s, %q", CodeOf(wrapped), MessageOf(wrapped))
	}
	if !errors.Is(wrapped, base) {
		t.Fatal("a sentinel must still match itself")
	}
}

func TestWrapKeepsCauseAndOuterCodeWins(t *testing.T) {
	cause := errors.New("driver: connection reset")
	inner := Wrap(cause, Unavailable, "database unavailable")
	outer := Wrap(inner, Conflict, "the run moved on")
	if CodeOf(outer) != Conflict || !errors.Is(outer, cause) || !errors.Is(outer, Unavailable) {
		t.Fatalf("outer=%v code=%s", outer, CodeOf(outer))
	}
	if Wrap(nil, Invalid, "x") != nil {
		t.Fatal("Wrap(nil) must be nil")
	}
}

func TestUnclassifiedErrorsAreInternalAndHidden(t *testing.T) {
	err := errors.New(`pq: duplicate key value violates unique constraint "x" (value=secret)`)
	if CodeOf(err) != Internal {
		t.Fatal("unclassified error must be Internal")
	}
	if MessageOf(err) == err.Error() || MessageOf(Wrap(err, Internal, "detail")) == "detail" {
		t.Fatal("an internal error's text must never reach the client")
	}
}

func TestErrorfKeepsWrappedCauses(t *testing.T) {
	cause, sentinel := errors.New("root"), errors.New("sentinel")
	e := Errorf(Invalid, "%w: field %s: %w", sentinel, "email", cause)
	if !errors.Is(e, cause) || !errors.Is(e, sentinel) || e.Code != Invalid || e.Error() != "sentinel: field email: root" {
		t.Fatalf("Errorf = %v (%+v)", e, e)
	}
	if MessageOf(e) != "sentinel: field email: root" {
		t.Fatalf("MessageOf = %q", MessageOf(e))
	}
}

type ownCode struct{}

func (ownCode) Error() string        { return "compile: line 3: unexpected token" }
func (ownCode) FaultCode() Code      { return Unprocessable }
func (ownCode) FaultMessage() string { return "compile: line 3: unexpected token" }

func TestTypesCarryTheirOwnCode(t *testing.T) {
	err := fmt.Errorf("load: %w", ownCode{})
	if CodeOf(err) != Unprocessable || MessageOf(err) != "compile: line 3: unexpected token" {
		t.Fatalf("CodeOf/MessageOf = %s, %q", CodeOf(err), MessageOf(err))
	}
}
