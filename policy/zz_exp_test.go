package policy

import (
	"context"
	"os"
	"testing"
)

func BenchmarkZZDir(b *testing.B) {
	e, err := New(context.Background(), os.DirFS(os.Getenv("REGODIR")))
	if err != nil {
		b.Fatal(err)
	}
	in := realisticEOB()
	if os.Getenv("FULL") != "" {
		in = realisticEOBFull()
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
}
