package api

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// readAll returns what io.ReadAll does whatever Content-Length the client
// claimed: exact, short, long, absent, or over the hint's bound; and a
// read error ends it with that error.
func TestReadAllMatchesReadAll(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16,000 bytes
	for _, hint := range []int64{-1, 0, 1, 100, int64(len(body)) - 1, int64(len(body)), int64(len(body)) + 1, 3 * bodyHintMax} {
		for name, r := range map[string]func() io.Reader{
			"whole":    func() io.Reader { return bytes.NewReader(body) },
			"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(body)) },
			"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(body)) },
		} {
			got, err := readAll(r(), hint)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("hint %d, %s: %d bytes, err %v; want the %d bytes", hint, name, len(got), err, len(body))
			}
		}
	}
	boom := errors.New("connection reset")
	if _, err := readAll(iotest.ErrReader(boom), 10); !errors.Is(err, boom) {
		t.Errorf("err = %v, want %v", err, boom)
	}
	if got, err := readAll(bytes.NewReader(nil), 0); err != nil || len(got) != 0 {
		t.Errorf("empty body: %q, %v", got, err)
	}
}

// BenchmarkReadBody reads a 14 KB notification body as a request delivers
// it, with its Content-Length and without one (chunked).
func BenchmarkReadBody(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 900)
	for _, tc := range []struct {
		name string
		cl   int64
	}{{"content-length", int64(len(body))}, {"chunked", -1}} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := readAll(bytes.NewReader(body), tc.cl); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
