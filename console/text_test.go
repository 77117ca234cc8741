package console

import (
	"strings"
	"testing"
)

func TestJoinSplitFiles(t *testing.T) {
	files := map[string]string{"b.rego": "package b\n", "a.rego": "package a", "data/x.json": "{}\n"}
	text := joinFiles(files)
	if !strings.HasPrefix(text, "-- a.rego --\npackage a\n-- b.rego --") {
		t.Errorf("joined:\n%s", text)
	}
	got, err := splitFiles(strings.ReplaceAll(text, "\n", "\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["a.rego"] != "package a\n" || got["b.rego"] != "package b\n" || got["data/x.json"] != "{}\n" {
		t.Errorf("split: %q", got)
	}
	for _, bad := range []string{"", "package a\n-- a.rego --\n", "-- a.rego --\nx\n-- a.rego --\ny\n"} {
		if _, err := splitFiles(bad); err == nil {
			t.Errorf("%q split without an error", bad)
		}
	}
}

func TestLineDiff(t *testing.T) {
	a := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10"
	b := "1\n2\n3\n4\nfive\n6\n7\n8\n9\n10\n11"
	var got []string
	for _, l := range lineDiff(a, b, 1) {
		if l.Gap > 0 {
			got = append(got, "…"+string(rune('0'+l.Gap)))
			continue
		}
		got = append(got, string(l.Op)+l.Text)
	}
	want := "…3| 4|-5|+five| 6|…3| 10|+11"
	if strings.Join(got, "|") != want {
		t.Errorf("diff %s, want %s", strings.Join(got, "|"), want)
	}
	if d := lineDiff(a, a, 3); d != nil {
		t.Errorf("no change gives %v", d)
	}
}

func FuzzSplitFiles(f *testing.F) {
	f.Add("-- a.rego --\npackage a\n")
	f.Add("-- --\n-- x --")
	f.Fuzz(func(t *testing.T, text string) {
		files, err := splitFiles(text)
		if err != nil {
			return
		}
		again, err := splitFiles(joinFiles(files))
		if err != nil || len(again) != len(files) {
			t.Fatalf("join then split: %v, %d files of %d", err, len(again), len(files))
		}
	})
}
