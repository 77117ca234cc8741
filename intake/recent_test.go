package intake

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startGets starts n gets of key whose load (shared) blocks until release
// is closed, and waits until the one load has begun.
func startGets(t *testing.T, r *recent[int], n int, loads *atomic.Int32, release chan struct{}, value int) (results chan int) {
	t.Helper()
	began := make(chan struct{}, n)
	results = make(chan int, n)
	for range n {
		go func() {
			v, err := r.get(context.Background(), "k", func(context.Context) (int, error) {
				loads.Add(1)
				began <- struct{}{}
				<-release
				return value, nil
			})
			if err != nil {
				t.Error(err)
			}
			results <- v
		}()
	}
	<-began
	return results
}

func TestRecentSharesOneReadAmongConcurrentMisses(t *testing.T) {
	var r recent[int]
	var loads atomic.Int32
	release := make(chan struct{})
	results := startGets(t, &r, 50, &loads, release, 7)
	// Let the other 49 reach the shared read before it ends.
	time.Sleep(50 * time.Millisecond)
	close(release)
	for range 50 {
		if v := <-results; v != 7 {
			t.Fatalf("get = %d, want 7", v)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d reads for 50 concurrent misses of one key, want 1", n)
	}
	// Kept: the next get reads nothing.
	v, err := r.get(context.Background(), "k", func(context.Context) (int, error) {
		t.Error("read again within recentTTL")
		return 0, nil
	})
	if err != nil || v != 7 {
		t.Fatalf("kept get = %d, %v", v, err)
	}
}

func TestRecentForgetDuringAReadKeepsNothingFromIt(t *testing.T) {
	var r recent[int]
	var loads atomic.Int32
	release := make(chan struct{})
	results := startGets(t, &r, 1, &loads, release, 1)
	// The subscription changed while the read was under way: what it
	// read may be the old state.
	r.forget("k")
	var wg sync.WaitGroup
	wg.Add(1)
	var after int
	go func() {
		defer wg.Done()
		after, _ = r.get(context.Background(), "k", func(context.Context) (int, error) { return 2, nil })
	}()
	wg.Wait()
	if after != 2 {
		t.Fatalf("a get after forget joined the earlier read: got %d, want 2", after)
	}
	close(release)
	if v := <-results; v != 1 {
		t.Fatalf("the first get = %d, want its own read's 1", v)
	}
	v, _ := r.get(context.Background(), "k", func(context.Context) (int, error) { return 3, nil })
	if v != 2 {
		t.Fatalf("kept value = %d, want 2 (the read begun before forget must not replace it)", v)
	}
}

func TestRecentWaiterStopsWithItsContextAndTheReadGoesOn(t *testing.T) {
	var r recent[int]
	release := make(chan struct{})
	readCtxErr := make(chan error, 1)
	leader := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithCancel(context.Background())
		go func() { time.Sleep(20 * time.Millisecond); cancel() }()
		v, err := r.get(ctx, "k", func(rctx context.Context) (int, error) {
			<-release
			readCtxErr <- rctx.Err()
			return 5, nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled caller: err = %v, want context.Canceled", err)
		}
		leader <- v
	}()
	if v := <-leader; v != 0 {
		t.Fatalf("cancelled caller got %d", v)
	}
	close(release)
	if err := <-readCtxErr; err != nil {
		t.Fatalf("the shared read saw its caller's cancellation: %v", err)
	}
	// The read finished for whoever comes next.
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, _ := r.get(context.Background(), "k", func(context.Context) (int, error) { return -1, nil })
		if v == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the read's value was not kept: got %d", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRecentKeepsNoFailure(t *testing.T) {
	var r recent[int]
	boom := errors.New("boom")
	if _, err := r.get(context.Background(), "k", func(context.Context) (int, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	v, err := r.get(context.Background(), "k", func(context.Context) (int, error) { return 9, nil })
	if err != nil || v != 9 {
		t.Fatalf("after a failure: %d, %v; want a fresh read", v, err)
	}
}

func TestLearningLetsOneClaimUntilReleased(t *testing.T) {
	var l learning
	if !l.claim("t|s") {
		t.Fatal("the first claim was refused")
	}
	if l.claim("t|s") {
		t.Fatal("a second claim within the window was granted")
	}
	if !l.claim("t|other") {
		t.Fatal("another subscription's claim was refused")
	}
	// The UPDATE failed: the next notification must try again.
	l.release("t|s")
	if !l.claim("t|s") {
		t.Fatal("a claim after release was refused")
	}
}

// A read that panics is an error for its callers, not the end of the
// process (singleflight would re-raise it where nothing recovers).
func TestRecentReadThatPanicsIsAnError(t *testing.T) {
	var r recent[int]
	_, err := r.get(context.Background(), "k", func(context.Context) (int, error) { panic("boom") })
	if !errors.Is(err, errReadPanicked) {
		t.Fatalf("err = %v, want errReadPanicked", err)
	}
	v, err := r.get(context.Background(), "k", func(context.Context) (int, error) { return 4, nil })
	if err != nil || v != 4 {
		t.Fatalf("after the panic: %d, %v", v, err)
	}
}
