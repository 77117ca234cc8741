package ratelimit

import (
	"strconv"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// Each key has a bucket of its own: one client that spends its burst
// leaves another's whole.
func TestKeysAreIndependent(t *testing.T) {
	b := New(rate.Every(time.Hour), 3, 100)
	for i := range 3 {
		if !b.Allow("a") {
			t.Fatalf("a's token %d refused", i+1)
		}
	}
	if b.Allow("a") {
		t.Fatal("a's fourth token within its burst of 3 allowed")
	}
	if !b.Allow("b") {
		t.Fatal("b refused after a spent its burst")
	}
}

// Buckets refill at their rate.
func TestBucketsRefill(t *testing.T) {
	b := New(rate.Every(10*time.Millisecond), 1, 100)
	if !b.Allow("a") || b.Allow("a") {
		t.Fatal("a burst of 1 should allow one token, then refuse")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !b.Allow("a") {
		if time.Now().After(deadline) {
			t.Fatal("the bucket did not refill")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// At most maxKeys keys are remembered: a new key past that forgets the
// others, so memory stays bounded, and a forgotten key starts full.
func TestKeysAreBounded(t *testing.T) {
	b := New(rate.Every(time.Hour), 1, 10)
	if !b.Allow("first") || b.Allow("first") {
		t.Fatal("first's burst of 1")
	}
	for i := range 10 {
		b.Allow("k" + strconv.Itoa(i))
	}
	if n := len(b.m); n > 10 {
		t.Fatalf("%d keys remembered, bound 10", n)
	}
	if !b.Allow("first") {
		t.Fatal("first was not forgotten when the keys reached the bound")
	}
}

// A burst under 1 still lets a request through: 0 would refuse everyone.
func TestBurstAtLeastOne(t *testing.T) {
	if !New(1, 0, 0).Allow("a") {
		t.Fatal("burst 0 refused the first request")
	}
}
