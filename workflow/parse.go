package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// ErrParse is wrapped by every error Parse returns.
var ErrParse = errors.New("workflow definition does not parse")

// ErrDuration is wrapped by every error ParseDuration returns.
var ErrDuration = errors.New("invalid duration")

// Parse reads a definition from JSON, or from YAML when the first non-space
// byte is not '{'. Unknown fields are an error in both. YAML is decoded into
// a generic value and then read through the same strict JSON decoder, so both
// forms accept exactly the same documents; YAML scalars that look like
// booleans or numbers ("value: true") must therefore be quoted.
//
// Parse checks syntax and field types only; Validate checks meaning. It
// rewrites the channel step types email, sms and portal as send steps on
// that channel.
func Parse(b []byte) (Definition, error) {
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	if len(trimmed) == 0 {
		return Definition{}, fmt.Errorf("%w: empty document", ErrParse)
	}
	if trimmed[0] != '{' {
		j, err := yamlToJSON(b)
		if err != nil {
			return Definition{}, err
		}
		trimmed = j
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var d Definition
	if err := dec.Decode(&d); err != nil {
		return Definition{}, fmt.Errorf("%w: %w", ErrParse, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Definition{}, fmt.Errorf("%w: data after the definition", ErrParse)
	}
	if err := normalizeChannelSteps(&d); err != nil {
		return Definition{}, err
	}
	return d, nil
}

// yamlToJSON decodes exactly one YAML document holding a mapping and
// re-encodes it as JSON.
func yamlToJSON(b []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty document", ErrParse)
		}
		return nil, fmt.Errorf("%w: yaml: %w", ErrParse, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one yaml document", ErrParse)
	}
	if _, ok := v.(map[string]any); !ok {
		if _, ok := v.(map[any]any); !ok {
			return nil, fmt.Errorf("%w: the document is not a mapping", ErrParse)
		}
	}
	j, err := jsonValue(v, "")
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParse, err)
	}
	return out, nil
}

// jsonValue turns what the YAML decoder produced into values encoding/json
// can encode: mappings with non-string keys are rejected, time stamps become
// RFC 3339 strings.
func jsonValue(v any, path string) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonValue(e, path+"."+k)
			if err != nil {
				return nil, err
			}
			m[k] = c
		}
		return m, nil
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("%w: a mapping key under %q is not a string", ErrParse, pathOrRoot(path))
			}
			c, err := jsonValue(e, path+"."+ks)
			if err != nil {
				return nil, err
			}
			m[ks] = c
		}
		return m, nil
	case []any:
		s := make([]any, len(x))
		for i, e := range x {
			c, err := jsonValue(e, path+"["+strconv.Itoa(i)+"]")
			if err != nil {
				return nil, err
			}
			s[i] = c
		}
		return s, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: %q is not a finite number", ErrParse, pathOrRoot(path))
		}
		return x, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	default:
		return v, nil
	}
}

func pathOrRoot(p string) string {
	if p == "" {
		return "."
	}
	return strings.TrimPrefix(p, ".")
}

// maxDays keeps days*24h inside time.Duration.
const maxDays = int64(math.MaxInt64 / int64(24*time.Hour))

// ParseDuration accepts Go durations (time.ParseDuration) plus whole days:
// "72h", "7d", "1d12h", "-72h", "30m", "0s". A sign may lead the whole value
// only. Errors wrap ErrDuration and do not repeat the value.
func ParseDuration(s string) (time.Duration, error) {
	rest := s
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "" {
		return 0, fmt.Errorf("%w: empty", ErrDuration)
	}
	var days int64
	var goPart strings.Builder
	for rest != "" {
		i := 0
		for i < len(rest) && (isDigit(rest[i]) || rest[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("%w: expected a number", ErrDuration)
		}
		num := rest[:i]
		rest = rest[i:]
		j := 0
		for j < len(rest) && !isDigit(rest[j]) && rest[j] != '.' {
			j++
		}
		unit := rest[:j]
		rest = rest[j:]
		if unit != "d" {
			goPart.WriteString(num)
			goPart.WriteString(unit)
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: days must be a whole number", ErrDuration)
		}
		if n > maxDays-days {
			return 0, fmt.Errorf("%w: out of range", ErrDuration)
		}
		days += n
	}
	var d time.Duration
	if goPart.Len() > 0 {
		var err error
		d, err = time.ParseDuration(goPart.String())
		if err != nil {
			return 0, fmt.Errorf("%w: not a Go duration with optional days", ErrDuration)
		}
	}
	dayPart := time.Duration(days) * 24 * time.Hour
	if d > math.MaxInt64-dayPart {
		return 0, fmt.Errorf("%w: out of range", ErrDuration)
	}
	total := dayPart + d
	if neg {
		total = -total
	}
	return total, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
