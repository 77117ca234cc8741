package client

import (
	"fmt"
	"net/url"
	"strings"
)

// validType accepts a FHIR resource type name: a capital letter, then letters.
func validType(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'A' || s[0] > 'Z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// validID accepts a FHIR id (and version id): [A-Za-z0-9\-\.]{1,64}. "." and
// ".." alone are refused, as they would change the URL path.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// parseReference reads a literal FHIR reference against a base URL:
// "Type/id", "Type/id/_history/vid", or an absolute http(s) URL whose origin
// and path lie under base. Error messages quote nothing from ref.
func parseReference(base *url.URL, ref string) (typ, id, vid string, err error) {
	invalid := func(why string) (string, string, string, error) {
		return "", "", "", fmt.Errorf("%w: %s", ErrInvalidReference, why)
	}
	switch {
	case ref == "":
		return invalid("empty")
	case strings.HasPrefix(ref, "#"):
		return invalid("contained reference cannot be fetched")
	case strings.HasPrefix(strings.ToLower(ref), "urn:"):
		return invalid("urn reference cannot be fetched")
	case strings.ContainsAny(ref, "?#"):
		return invalid("conditional reference or fragment")
	}
	rest := ref
	if strings.Contains(ref, "://") {
		u, perr := url.Parse(ref)
		if perr != nil || u.Host == "" || u.Opaque != "" {
			return invalid("absolute reference is not a valid URL")
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return "", "", "", fmt.Errorf("%w: scheme is not http(s)", ErrForeignReference)
		}
		prefix := base.Path + "/"
		if u.User != nil || !sameOrigin(base, u) || !strings.HasPrefix(u.Path, prefix) {
			return "", "", "", ErrForeignReference
		}
		if u.RawPath != "" {
			return invalid("escaped characters in path")
		}
		rest = strings.TrimPrefix(u.Path, prefix)
	}
	segs := strings.Split(rest, "/")
	switch {
	case len(segs) == 2:
	case len(segs) == 4 && segs[2] == "_history":
		vid = segs[3]
		if !validID(vid) {
			return invalid("version id malformed")
		}
	default:
		return invalid("not Type/id or Type/id/_history/vid")
	}
	if !validType(segs[0]) || !validID(segs[1]) {
		return invalid("resource type or id malformed")
	}
	return segs[0], segs[1], vid, nil
}
