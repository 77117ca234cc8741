package console

import (
	"maps"
	"slices"
	"strings"

	"github.com/tidings-health/tidings/fault"
)

// A policy's files are edited as one text: each file starts with a line
// "-- name --" (the txtar convention), followed by its content.

// joinFiles is files as one text, by name.
func joinFiles(files map[string]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b.WriteString("-- " + name + " --\n")
		content := files[name]
		b.WriteString(content)
		if content != "" && !strings.HasSuffix(content, "\n") {
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// splitFiles reads a text that joinFiles wrote, or an analyst edited: line
// endings are normalised (browsers post a textarea with CRLF). Its errors
// name lines, never content.
func splitFiles(text string) (map[string]string, error) {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	files := map[string]string{}
	name := ""
	var content strings.Builder
	flush := func() {
		if name != "" {
			files[name] = content.String()
		}
		content.Reset()
	}
	for i, line := range strings.SplitAfter(text, "\n") {
		if n, ok := fileMarker(line); ok {
			flush()
			if _, dup := files[n]; dup {
				return nil, fault.Errorf(fault.Invalid, "line %d: the file %q appears twice", i+1, n)
			}
			name = n
			continue
		}
		if name == "" {
			if strings.TrimSpace(line) != "" {
				return nil, fault.Errorf(fault.Invalid, "line %d: text before the first \"-- name.rego --\" line", i+1)
			}
			continue
		}
		content.WriteString(line)
	}
	flush()
	if len(files) == 0 {
		return nil, fault.New(fault.Invalid, `the policy has no files: start each with a line "-- name.rego --"`)
	}
	return files, nil
}

// fileMarker reads a "-- name --" line.
func fileMarker(line string) (string, bool) {
	line = strings.TrimRight(line, "\n")
	if !strings.HasPrefix(line, "-- ") || !strings.HasSuffix(line, " --") || len(line) < 7 {
		return "", false
	}
	name := strings.TrimSpace(line[3 : len(line)-3])
	return name, name != ""
}

// diffLine is one line of a line diff: ' ' kept, '-' removed, '+' added;
// a Gap stands for unchanged lines left out.
type diffLine struct {
	Op   byte
	Text string
	Gap  int
}

// maxDiffCells bounds the table of the longest-common-subsequence diff;
// beyond it the changed middle is shown as removed, then added.
const maxDiffCells = 4 << 20

// lineDiff is a line diff from a to b with context lines of context
// around each change.
func lineDiff(a, b string, context int) []diffLine {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	pre := 0
	for pre < len(x) && pre < len(y) && x[pre] == y[pre] {
		pre++
	}
	suf := 0
	for suf < len(x)-pre && suf < len(y)-pre && x[len(x)-1-suf] == y[len(y)-1-suf] {
		suf++
	}
	var all []diffLine
	for _, l := range x[:pre] {
		all = append(all, diffLine{Op: ' ', Text: l})
	}
	all = append(all, middleDiff(x[pre:len(x)-suf], y[pre:len(y)-suf])...)
	for _, l := range x[len(x)-suf:] {
		all = append(all, diffLine{Op: ' ', Text: l})
	}
	return withContext(all, context)
}

// middleDiff diffs two runs of lines by their longest common subsequence.
func middleDiff(x, y []string) []diffLine {
	var out []diffLine
	if len(x)*len(y) > maxDiffCells {
		for _, l := range x {
			out = append(out, diffLine{Op: '-', Text: l})
		}
		for _, l := range y {
			out = append(out, diffLine{Op: '+', Text: l})
		}
		return out
	}
	// lcs[i][j] is the LCS length of x[i:] and y[j:].
	w := len(y) + 1
	lcs := make([]int32, (len(x)+1)*w)
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i*w+j] = lcs[(i+1)*w+j+1] + 1
			} else {
				lcs[i*w+j] = max(lcs[(i+1)*w+j], lcs[i*w+j+1])
			}
		}
	}
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out = append(out, diffLine{Op: ' ', Text: x[i]})
			i, j = i+1, j+1
		case i < len(x) && (j == len(y) || lcs[(i+1)*w+j] >= lcs[i*w+j+1]):
			out = append(out, diffLine{Op: '-', Text: x[i]})
			i++
		default:
			out = append(out, diffLine{Op: '+', Text: y[j]})
			j++
		}
	}
	return out
}

// withContext keeps the changed lines and n unchanged ones around each,
// replacing the other unchanged runs by a Gap; nil when nothing changed.
func withContext(all []diffLine, n int) []diffLine {
	keep := make([]bool, len(all))
	changed := false
	for i, l := range all {
		if l.Op == ' ' {
			continue
		}
		changed = true
		for k := max(0, i-n); k <= min(len(all)-1, i+n); k++ {
			keep[k] = true
		}
	}
	if !changed {
		return nil
	}
	var out []diffLine
	gap := 0
	for i, l := range all {
		if keep[i] {
			if gap > 0 {
				out = append(out, diffLine{Gap: gap})
				gap = 0
			}
			out = append(out, l)
			continue
		}
		gap++
	}
	if gap > 0 {
		out = append(out, diffLine{Gap: gap})
	}
	return out
}
