// Command testreport reads `go test -json` on standard input, keeps it in a
// file (for tidings evidence --test-report) and prints what plain go test
// would: a line per package, and the whole output of each failed test.
// It exits 1 when a test or package failed.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

func main() {
	out := flag.String("out", "test-report.jsonl", "file to keep the go test -json events in")
	flag.Parse()
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	failed, err := summarise(io.TeeReader(os.Stdin, f), os.Stdout)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}

// summarise prints package lines and failed tests' output; it reports
// whether anything failed.
func summarise(r io.Reader, w io.Writer) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	outputs := map[string]*strings.Builder{} // package + test → output so far
	failed := false
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(w, "%s\n", line) // build errors and other plain lines
			continue
		}
		key := ev.Package + " " + ev.Test
		switch ev.Action {
		case "build-output": // a package that does not compile (Go 1.24 and later)
			fmt.Fprint(w, ev.Output)
		case "output":
			if ev.Test == "" {
				if !strings.HasPrefix(ev.Output, "=== ") && !strings.HasPrefix(ev.Output, "--- PASS") && ev.Output != "PASS\n" {
					fmt.Fprint(w, ev.Output)
				}
				continue
			}
			b := outputs[key]
			if b == nil {
				b = &strings.Builder{}
				outputs[key] = b
			}
			b.WriteString(ev.Output)
		case "fail":
			failed = true
			if b := outputs[key]; b != nil && ev.Test != "" && !strings.Contains(ev.Test, "/") {
				fmt.Fprint(w, b.String())
			}
			delete(outputs, key)
		case "pass", "skip":
			delete(outputs, key)
		}
	}
	return failed, sc.Err()
}
