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
	var seenType, seenID, seenMeta bool
	ok = members(raw, func(key, value []byte) bool {
		switch {
		case string(key) == "resourceType":
			return once(&seenType) && plainStringTo(&h.ResourceType, value)
		case string(key) == "id":
			return once(&seenID) && plainStringTo(&h.ID, value)
		case string(key) == "meta":
			// Meta is small: decoding it alone is what decoding the
			// whole resource would do with it.
			return once(&seenMeta) && json.Unmarshal(value, &h.Meta) == nil
		}
		return !foldsTo(key, "resourceType", "id", "meta")
	})
	return h, ok
}

// members calls fn with each member of the JSON object raw (checked JSON),
// in order; it returns false, having stopped, when raw is not an object,
// a key is not plain (plainKey), or fn returns false.
func members(raw []byte, fn func(key, value []byte) bool) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	for i < len(raw) {
		if raw[i] != '"' {
			return false
		}
		keyEnd := bytes.IndexByte(raw[i+1:], '"')
		if keyEnd < 0 {
			return false
		}
		key := raw[i+1 : i+1+keyEnd]
		if !plainKey(key) {
			return false
		}
		i = skipSpace(raw, i+2+keyEnd)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		start := skipSpace(raw, i+1)
		end := ValueEnd(raw, start)
		if end < 0 || !fn(key, raw[start:end:end]) {
			return false
		}
		i = skipSpace(raw, end)
		if i >= len(raw) {
			return false
		}
		switch raw[i] {
		case ',':
			i = skipSpace(raw, i+1)
		case '}':
			return skipSpace(raw, i+1) == len(raw)
		default:
			return false
		}
	}
	return false
}

// once marks a member seen; false the second time (json.Unmarshal would
// take the last, or merge objects: left to it).
func once(seen *bool) bool {
	if *seen {
		return false
	}
	*seen = true
	return true
}

// foldsTo reports whether key matches one of names only without case, as
// encoding/json would still match it.
func foldsTo(key []byte, names ...string) bool {
	for _, n := range names {
		if string(key) != n && asciiEqualFold(key, []byte(n)) {
			return true
		}
	}
	return false
}

// plainStringTo sets *dst to a plain string value (plainString).
func plainStringTo(dst *string, v []byte) bool {
	s, ok := plainString(v)
	if ok && string(v) != "null" {
		*dst = s
	}
	return ok
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
			j = stringEnd(b, j+1)
			if j < 0 {
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

// stringEnd returns the index of the quote that closes the string whose
// text starts at b[i], or -1. A quote is escaped when an odd number of
// backslashes precede it; IndexByte finds candidates fast.
func stringEnd(b []byte, i int) int {
	for {
		k := bytes.IndexByte(b[i:], '"')
		if k < 0 {
			return -1
		}
		q := i + k
		n := 0
		for p := q - 1; p >= i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return q
		}
		i = q + 1
	}
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', '}', ']', ' ', '\t', '\n', '\r', ':':
		return true
	}
	return false
}

// scanBundle reads what decodeBundleAtOnce reads from a checked body, by
// walking members instead of json.Unmarshal validating the body and then
// skipping through every resource again. The entries' values alias body.
// ok is false where the walk would have to interpret (see readHead), and
// for anything decodeBundleAtOnce refuses; the caller then decodes.
func scanBundle(body []byte) (env bundleEnvelope, entries []bundleEntry, ok bool) {
	var seenType, seenKind, seenMeta, seenEntry bool
	ok = members(body, func(key, value []byte) bool {
		switch {
		case string(key) == "resourceType":
			return once(&seenType) && plainStringTo(&env.ResourceType, value)
		case string(key) == "type":
			return once(&seenKind) && plainStringTo(&env.Type, value)
		case string(key) == "meta":
			return once(&seenMeta) && json.Unmarshal(value, &env.Meta) == nil
		case string(key) == "entry":
			if !once(&seenEntry) {
				return false
			}
			var good bool
			entries, good = scanEntries(value)
			return good
		}
		return !foldsTo(key, "resourceType", "type", "meta", "entry")
	})
	if !ok || env.ResourceType != "Bundle" || len(entries) > MaxEntries {
		return bundleEnvelope{}, nil, false
	}
	return env, entries, true
}

// scanEntries reads Bundle.entry: null, or an array of entry objects each
// of whose resource, if any, is an object.
func scanEntries(v []byte) ([]bundleEntry, bool) {
	if string(v) == "null" {
		return nil, true
	}
	if len(v) < 2 || v[0] != '[' {
		return nil, false
	}
	entries := make([]bundleEntry, 0, 4)
	i := skipSpace(v, 1)
	if i < len(v) && v[i] == ']' {
		return entries, skipSpace(v, i+1) == len(v)
	}
	for i < len(v) && len(entries) <= MaxEntries {
		end := ValueEnd(v, i)
		if end < 0 {
			return nil, false
		}
		e, ok := scanEntry(v[i:end:end])
		if !ok {
			return nil, false
		}
		entries = append(entries, e)
		i = skipSpace(v, end)
		if i >= len(v) {
			return nil, false
		}
		switch v[i] {
		case ',':
			i = skipSpace(v, i+1)
		case ']':
			return entries, skipSpace(v, i+1) == len(v)
		default:
			return nil, false
		}
	}
	return nil, false
}

func scanEntry(v []byte) (e bundleEntry, ok bool) {
	var seenURL, seenResource, seenRequest, seenResponse bool
	ok = members(v, func(key, value []byte) bool {
		switch {
		case string(key) == "fullUrl":
			return once(&seenURL) && plainStringTo(&e.FullURL, value)
		case string(key) == "resource":
			e.Resource = value
			return once(&seenResource) && (string(value) == "null" || value[0] == '{')
		case string(key) == "request":
			e.Request = value
			return once(&seenRequest)
		case string(key) == "response":
			e.Response = value
			return once(&seenResponse)
		}
		return !foldsTo(key, "fullUrl", "resource", "request", "response")
	})
	return e, ok
}
