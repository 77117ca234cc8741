package fhir

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// readHead reads a resource's resourceType, id and meta from JSON that
// checkJSON has passed. json.Unmarshal would validate the whole resource,
// then skip through it again for three members; readHead walks only the
// top level, pairing brackets to skip values. Whatever it does not read
// plainly (a key with escapes, a key that differs from a field's name only
// in case, a member given twice, a value with escapes or of another type,
// a meta json.Unmarshal refuses) it hands to json.Unmarshal, so the result and any error
// are what json.Unmarshal gives.
func readHead(raw []byte) (resourceHead, error) {
	var h resourceHead
	if head, ok := scanHead(raw); ok {
		return head, nil
	}
	err := json.Unmarshal(raw, &h)
	return h, err
}

// scanHead is readHead's walk; ok is false where json.Unmarshal must
// decide.
func scanHead(raw []byte) (h resourceHead, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return h, false
	}
	var seenType, seenID, seenMeta bool
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return h, true
	}
	for i < len(raw) {
		if raw[i] != '"' {
			return h, false
		}
		keyEnd := bytes.IndexByte(raw[i+1:], '"')
		if keyEnd < 0 {
			return h, false
		}
		key := raw[i+1 : i+1+keyEnd]
		if !plainKey(key) {
			return h, false
		}
		i = skipSpace(raw, i+2+keyEnd)
		if i >= len(raw) || raw[i] != ':' {
			return h, false
		}
		start := skipSpace(raw, i+1)
		end := ValueEnd(raw, start)
		if end < 0 {
			return h, false
		}
		value := raw[start:end]
		switch {
		case string(key) == "resourceType":
			if seenType {
				return h, false
			}
			seenType = true
			if h.ResourceType, ok = plainString(value); !ok {
				return h, false
			}
		case string(key) == "id":
			if seenID {
				return h, false
			}
			seenID = true
			if h.ID, ok = plainString(value); !ok {
				return h, false
			}
		case string(key) == "meta":
			// Meta is small: decoding it alone is what decoding the
			// whole resource would do with it.
			if seenMeta || json.Unmarshal(value, &h.Meta) != nil {
				return h, false
			}
			seenMeta = true
		case asciiEqualFold(key, []byte("resourceType")), asciiEqualFold(key, []byte("id")), asciiEqualFold(key, []byte("meta")):
			return h, false
		}
		i = skipSpace(raw, end)
		if i >= len(raw) {
			return h, false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return h, skipSpace(raw, i+1) == len(raw)
		default:
			return h, false
		}
	}
	return h, false
}

// plainKey reports whether a key is ASCII without escapes: encoding/json
// matches field names without case, by Unicode folding (the Kelvin sign
// is a k), which only an ASCII key is sure to escape.
func plainKey(key []byte) bool {
	for _, c := range key {
		if c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// plainString is the text of a JSON string without escapes; null is "",
// as json.Unmarshal leaves a string field. ok is false for anything else.
func plainString(v []byte) (string, bool) {
	if string(v) == "null" {
		return "", true
	}
	if len(v) < 2 || v[0] != '"' || bytes.IndexByte(v[1:len(v)-1], '\\') >= 0 || !utf8.Valid(v) {
		return "", false // json.Unmarshal unescapes, and replaces bad UTF-8
	}
	return string(v[1 : len(v)-1]), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// ValueEnd returns the end of the JSON value that starts at b[i] (object,
// array, string or literal), or -1 when b ends first. It trusts the JSON
// to be valid (checked before, or written by us): it pairs brackets
// outside strings and does not look inside values.
func ValueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch c := b[j]; c {
		case '"':
			j++
			for ; j < len(b) && b[j] != '"'; j++ {
				if b[j] == '\\' {
					j++
				}
			}
			if j >= len(b) {
				return -1
			}
			if depth == 0 {
				return j + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1
			}
			if depth < 0 {
				return -1
			}
		default:
			if depth == 0 {
				// A literal: number, true, false or null.
				for j < len(b) && !isDelimiter(b[j]) {
					j++
				}
				return j
			}
		}
	}
	return -1
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r', ':':
		return true
	}
	return false
}
