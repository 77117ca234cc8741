package store

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidings-health/tidings/fhir"
	"github.com/tidings-health/tidings/intake"
)

// learnCounting is the real store, counting the calls that ask it to learn
// a subscription's own reference.
type learnCounting struct {
	*Store
	learn atomic.Int32
}

func (c *learnCounting) RecordEventNumbers(ctx context.Context, tenantID, subscriptionID, remoteRef string, numbers []int64) error {
	if remoteRef != "" {
		c.learn.Add(1)
	}
	return c.Store.RecordEventNumbers(ctx, tenantID, subscriptionID, remoteRef, numbers)
}

// A subscription's reference is learnt from its first notification, once:
// the notifications that arrive with it or after it, while the
// subscription intake keeps still has no reference, do not send the same
// UPDATE again.
func TestIntakeLearnsTheSubscriptionReferenceOnce(t *testing.T) {
	s := mustStore(t)
	ctx := context.Background()
	eob, err := os.ReadFile("../fhir/testdata/carin-bb-2.0.0/ExplanationOfBenefit-EOBProfessional1.json")
	if err != nil {
		t.Fatal(err)
	}
	const ref = "https://payer.example/fhir/Subscription/eob-sub"
	body, err := fhir.WrapResources(eob, ref, "http://hl7.org/fhir/us/carin-bb/SubscriptionTopic/eob", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st := &learnCounting{Store: s}
	svc := &intake.Service{Store: st}
	// Twenty at once, all authenticated before any has learnt the
	// reference (as a burst is), then five more one by one.
	subs := make([]intake.Subscription, 20)
	for i := range subs {
		if subs[i], err = svc.Authenticate(ctx, "t1", "sub1", "s3cret-s3cret"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i, sub := range subs {
		wg.Go(func() {
			if _, err := svc.Receive(ctx, sub, body); err != nil {
				t.Errorf("notification %d: %v", i+1, err)
			}
		})
	}
	wg.Wait()
	for i := range 5 {
		sub, err := svc.Authenticate(ctx, "t1", "sub1", "s3cret-s3cret")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Receive(ctx, sub, body); err != nil {
			t.Fatalf("notification %d: %v", 21+i, err)
		}
	}
	if n := st.learn.Load(); n != 1 {
		t.Fatalf("25 notifications asked to learn the subscription's reference %d times, want 1", n)
	}
	got, err := s.SubscriptionByID(ctx, "t1", "sub1")
	if err != nil || got.RemoteRef != ref {
		t.Fatalf("remote reference = %q, %v; want %q", got.RemoteRef, err, ref)
	}
}
