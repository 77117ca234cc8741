package main

import (
	"strings"
	"testing"
)

// A failed test's output is printed with the package lines; passing
// tests stay quiet, as with plain go test; a failure is reported.
func TestSummarise(t *testing.T) {
	in := strings.Join([]string{
		`{"Action":"output","Package":"p","Test":"TestOK","Output":"=== RUN   TestOK\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestOK"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: boom\n"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"--- FAIL: TestA (0.00s)\n"}`,
		`{"Action":"fail","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Output":"FAIL\tp\t0.1s\n"}`,
		`{"Action":"fail","Package":"p"}`,
		`{"Action":"output","Package":"q","Output":"ok  \tq\t0.2s\n"}`,
		`{"Action":"pass","Package":"q"}`,
		`{"ImportPath":"s","Action":"build-output","Output":"s/y.go:1:1: undefined: z\n"}`,
		`# r`, `r/x.go:3:1: syntax error`,
	}, "\n")
	var out strings.Builder
	failed, err := summarise(strings.NewReader(in), &out)
	if err != nil || !failed {
		t.Fatalf("failed %v, err %v", failed, err)
	}
	want := "    a_test.go:9: boom\n--- FAIL: TestA (0.00s)\nFAIL\tp\t0.1s\nok  \tq\t0.2s\ns/y.go:1:1: undefined: z\n# r\nr/x.go:3:1: syntax error\n"
	if out.String() != want {
		t.Errorf("printed\n%q\nwant\n%q", out.String(), want)
	}
	failed, _ = summarise(strings.NewReader(`{"Action":"pass","Package":"q"}`), &out)
	if failed {
		t.Error("a passing run reported failed")
	}
}
