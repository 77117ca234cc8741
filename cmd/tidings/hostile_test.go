package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// hostileCorpus derives n malformed or unexpected payloads from the published
// examples: truncated, deeply nested, huge strings, wrong types, invalid
// UTF-8, wrong resource types, flipped bytes, duplicated keys.
func hostileCorpus(t *testing.T, n int) [][]byte {
	t.Helper()
	var seeds [][]byte
	filepath.WalkDir(fixtures, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".json") {
			if b, err := os.ReadFile(path); err == nil && len(b) <= 64<<10 {
				seeds = append(seeds, b)
			}
		}
		return nil
	})
	if len(seeds) < 10 {
		t.Fatalf("only %d seed fixtures found", len(seeds))
	}
	r := rand.New(rand.NewPCG(20261127, 2))
	types := []string{"Patient", "Bundle", "Parameters", "SubscriptionStatus", "OperationOutcome", "", "ExplanationOfBenefit", "Appointment", "Nope"}
	out := make([][]byte, 0, n)
	for len(out) < n {
		seed := seeds[r.IntN(len(seeds))]
		var p []byte
		switch k := r.IntN(9); k {
		case 0: // truncated
			p = append([]byte(nil), seed[:r.IntN(len(seed))]...)
		case 1: // deeply nested arrays or objects inside a bundle
			depth := 1000 + r.IntN(100000)
			open, closing := "[", "]"
			if r.IntN(2) == 0 {
				open, closing = `{"a":`, "}"
			}
			p = []byte(`{"resourceType":"Bundle","type":"history","entry":` + strings.Repeat(open, depth) + "1" + strings.Repeat(closing, depth) + "}")
		case 2: // a huge string (kept under the 1 MiB limit on most draws)
			if r.IntN(10) == 0 {
				p = bytes.Replace(seed, []byte(`"id":"`), []byte(`"id":"`+strings.Repeat("A", 200<<10+r.IntN(800<<10))), 1)
			} else {
				p = bytes.Replace(seed, []byte(`"value":"`), []byte(`"value":"`+strings.Repeat("x", r.IntN(64<<10))), 1)
			}
		case 3: // wrong types
			swaps := [][2]string{{`"type":"history"`, `"type":5`}, {`"entry":[`, `"entry":{"x":[`}, {`"resourceType":"`, `"resourceType":["`}, {`"value":`, `"value":{"nested":`}, {`"coding":[`, `"coding":"`}}
			s := swaps[r.IntN(len(swaps))]
			p = bytes.Replace(seed, []byte(s[0]), []byte(s[1]), -1)
		case 4: // invalid UTF-8
			p = append([]byte(nil), seed...)
			for i := 0; i < 1+r.IntN(8); i++ {
				p[r.IntN(len(p))] = byte(0x80 + r.IntN(0x40))
			}
		case 5: // wrong resource types
			p = bytes.Replace(seed, []byte(`"resourceType":"`), []byte(`"resourceType":"`+types[r.IntN(len(types))]+`X`), 1+r.IntN(3))
		case 6: // flipped bytes
			p = append([]byte(nil), seed...)
			for i := 0; i < 1+r.IntN(16); i++ {
				p[r.IntN(len(p))] = byte(r.IntN(256))
			}
		case 7: // duplicated keys
			p = bytes.Replace(seed, []byte(`{"resourceType":`), []byte(`{"resourceType":"Bundle","resourceType":`), 1)
		case 8: // not JSON at all, or JSON that is not an object
			alts := []string{"null", "[]", "12", `"str"`, "{}", "<xml/>", "\x00\x01", "true"}
			p = []byte(alts[r.IntN(len(alts))])
		}
		out = append(out, p)
	}
	return out
}

// 10,000 hostile payloads through HTTP: never a 5xx, never a panic, every
// rejection an OperationOutcome, memory bounded, the service still ready.
func TestHostilePayloadsThroughHTTP(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	ts := newTestStack(t, testOpts{DeferWorker: true, RatePerSecond: 1e6, RateBurst: 1e6})
	corpus := hostileCorpus(t, 10000)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var mu sync.Mutex
	statuses := map[int]int{}
	var bad []string
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				req, _ := http.NewRequest(http.MethodPost, ts.BaseURL+"/fhir/r4/notify/"+devSubscription, bytes.NewReader(corpus[i]))
				req.Header.Set("Content-Type", "application/fhir+json")
				req.Header.Set("Authorization", "Bearer "+ts.Secret)
				resp, err := client.Do(req)
				if err != nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("payload %d: %v", i, err))
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				if resp.StatusCode >= 500 || (resp.StatusCode >= 400 && !bytes.Contains(body, []byte(`"resourceType":"OperationOutcome"`))) {
					bad = append(bad, fmt.Sprintf("payload %d: %d %.200s", i, resp.StatusCode, body))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range corpus {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	t.Logf("statuses: %v", statuses)
	if len(bad) > 0 {
		var errs []string
		for _, l := range strings.Split(ts.Logs.String(), "\n") {
			if strings.Contains(l, `"level":"ERROR"`) && len(errs) < 5 {
				errs = append(errs, l)
			}
		}
		t.Fatalf("%d bad answers, first: %v\nservice errors: %s", len(bad), bad[:min(5, len(bad))], strings.Join(errs, "\n"))
	}
	if statuses[400]+statuses[413]+statuses[422] < 5000 {
		t.Errorf("too few rejections (%v): the corpus is not hostile enough to prove anything", statuses)
	}
	if strings.Contains(ts.Logs.String(), "panic") {
		t.Error("a handler panicked")
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > 512<<20 {
		t.Errorf("heap in use %d MiB after the run", ms.HeapInuse>>20)
	}
	resp, err := http.Get(ts.BaseURL + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("not ready after the run: %v", err)
	}
	resp.Body.Close()
	_ = context.Background
}
