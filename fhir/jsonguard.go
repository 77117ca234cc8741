package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits applied to every document this package reads. A notification or a
// resource larger or deeper than this is refused as ErrMalformed before any
// decoding into Go values happens.
const (
	// MaxBodyBytes bounds a notification body or a single resource.
	MaxBodyBytes = 8 << 20
	// MaxDepth bounds JSON nesting (objects and arrays).
	MaxDepth = 64
	// MaxEntries bounds the entries of a Bundle.
	MaxEntries = 10000
	// MaxEvents bounds the notification events of one status.
	MaxEvents = 1000
)

// guardFrame is one open object or array while checking a document.
type guardFrame struct {
	object    bool
	expectKey bool
	keys      map[string]struct{}
}

// CheckResource runs the guard every notification body passes on a
// resource read from elsewhere (a FHIR server's answer): one JSON value
// within MaxBodyBytes and MaxDepth, with no key repeated in an object.
// Errors wrap ErrMalformed and carry a byte offset, never content.
func CheckResource(raw json.RawMessage) error { return checkJSON(raw, "resource") }

// checkJSON verifies that doc is exactly one well-formed JSON value within the
// size and depth limits and without duplicate keys in any object. Errors wrap
// ErrMalformed and carry a byte offset, never document content.
func checkJSON(doc []byte, what string) error {
	if len(doc) > MaxBodyBytes {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrMalformed, what, MaxBodyBytes)
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return fmt.Errorf("%w: %s is empty", ErrMalformed, what)
	}
	// Every notification, and every resource a worker reads, comes through
	// here: the common case (a valid document with plain keys) is answered
	// by a quick scan; anything else takes the thorough walk, whose errors
	// say what is wrong and where.
	if json.Valid(doc) && quickCheck(doc) {
		return nil
	}
	return walkJSON(doc, what)
}

// keyFrame is one open object or array in quickCheck: an object's keys so
// far, as they are in the document.
type keyFrame struct {
	object bool
	keys   [][]byte
}

// quickCheck reports whether a document json.Valid accepts nests no deeper
// than MaxDepth and repeats no key in an object, comparing keys as walkJSON
// does (case-insensitively). It answers false, for walkJSON to decide, on
// anything it does not read itself: a key with an escape or a byte outside
// ASCII.
func quickCheck(doc []byte) bool {
	stack := make([]keyFrame, 0, 16)
	prev := byte(0) // the last structural byte or value outside strings
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		switch c {
		case '"':
			j, plain := i+1, true
			for ; j < len(doc) && doc[j] != '"'; j++ {
				switch b := doc[j]; {
				case b == '\\':
					plain = false
					j++
				case b >= 0x80:
					plain = false
				}
			}
			if n := len(stack); n > 0 && stack[n-1].object && (prev == '{' || prev == ',') {
				if !plain {
					return false
				}
				key := doc[i+1 : j]
				for _, k := range stack[n-1].keys {
					if asciiEqualFold(k, key) {
						return false
					}
				}
				stack[n-1].keys = append(stack[n-1].keys, key)
			}
			i, prev = j, '"'
		case '{', '[':
			if len(stack) >= MaxDepth {
				return false
			}
			n := len(stack)
			if n < cap(stack) {
				stack = stack[:n+1] // reuse the frame's key slice
			} else {
				stack = append(stack, keyFrame{})
			}
			stack[n].object, stack[n].keys = c == '{', stack[n].keys[:0]
			prev = c
		case '}', ']':
			stack = stack[:len(stack)-1]
			prev = c
		case ' ', '\t', '\n', '\r':
		default:
			prev = c
		}
	}
	return true
}

func asciiEqualFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// walkJSON is checkJSON's thorough walk, token by token.
func walkJSON(doc []byte, what string) error {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var stack []*guardFrame
	values := 0
	afterValue := func() {
		if len(stack) == 0 {
			values++
			return
		}
		if top := stack[len(stack)-1]; top.object {
			top.expectKey = true
		}
	}
	for {
		offset := dec.InputOffset()
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s is not valid JSON near byte %d", ErrMalformed, what, dec.InputOffset())
		}
		if values > 0 {
			return fmt.Errorf("%w: %s has data after the top-level value at byte %d", ErrMalformed, what, offset)
		}
		if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:n-1]
				afterValue()
				continue
			}
			key, ok := tok.(string)
			if !ok {
				return fmt.Errorf("%w: %s has a non-string key near byte %d", ErrMalformed, what, dec.InputOffset())
			}
			// encoding/json matches keys case-insensitively, so "type" and
			// "TYPE" would silently overwrite each other: treat them as a
			// repeated key too.
			top := stack[n-1]
			folded := strings.ToLower(key)
			if _, dup := top.keys[folded]; dup {
				return fmt.Errorf("%w: %s repeats a key in one object near byte %d", ErrMalformed, what, offset)
			}
			top.keys[folded] = struct{}{}
			top.expectKey = false
			continue
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				if len(stack) >= MaxDepth {
					return fmt.Errorf("%w: %s nests deeper than %d levels near byte %d", ErrMalformed, what, MaxDepth, offset)
				}
				f := &guardFrame{object: d == '{', expectKey: d == '{'}
				if f.object {
					f.keys = make(map[string]struct{})
				}
				stack = append(stack, f)
			case '}', ']':
				stack = stack[:len(stack)-1]
				afterValue()
			}
			continue
		}
		afterValue()
	}
	if values != 1 || len(stack) != 0 {
		return fmt.Errorf("%w: %s is not one complete JSON value", ErrMalformed, what)
	}
	return nil
}

// decodeError turns a json decoding error into one that names the field path
// but never the offending value (UnmarshalTypeError.Value can hold a number
// from the input, and third-party enum decoders quote the bad code).
func decodeError(what string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Errorf("%w: %s: field %q has the wrong JSON type", ErrMalformed, what, te.Field)
		}
		return fmt.Errorf("%w: %s has the wrong JSON type", ErrMalformed, what)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("%w: %s is not valid JSON near byte %d", ErrMalformed, what, se.Offset)
	}
	return fmt.Errorf("%w: %s holds an invalid value", ErrMalformed, what)
}
