package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// allowedBuiltins are the only built-in functions a Tidings policy may call:
// what a notice policy needs to look at a payload, a contact and a channel
// and to say why it denies (strings, numbers, sets, objects, arrays, regular
// expressions, time, JSON) and what the compiler and the tester rewrite
// operators, `in`, `print` and test cases into. Everything else does not
// compile, including every built-in a future OPA version adds: a policy
// sees PHI and must not be able to send it anywhere (http.send, net.*,
// json.*_schema, which follow "$ref" to URLs), read the process
// (opa.runtime), or depend on chance (rand.intn, uuid.rfc4122).
var allowedBuiltins = map[string]bool{
	// Operators and what the compiler rewrites into.
	"assign": true, "eq": true, "equal": true, "neq": true,
	"lt": true, "lte": true, "gt": true, "gte": true,
	"plus": true, "minus": true, "mul": true, "div": true, "rem": true,
	"and": true, "or": true,
	"internal.member_2": true, "internal.member_3": true,
	"internal.print": true, "print": true,
	"internal.template_string": true, "internal.test_case": true,

	// Numbers and aggregates.
	"abs": true, "ceil": true, "floor": true, "round": true,
	"count": true, "sum": true, "product": true, "max": true, "min": true, "sort": true,
	"numbers.range": true, "numbers.range_step": true, "to_number": true, "format_int": true,

	// Arrays, sets and objects.
	"array.concat": true, "array.flatten": true, "array.reverse": true, "array.slice": true,
	"intersection": true, "union": true,
	"object.filter": true, "object.get": true, "object.keys": true, "object.remove": true,
	"object.subset": true, "object.union": true, "object.union_n": true,
	"json.filter": true, "json.remove": true, "json.patch": true, "walk": true,

	// Types.
	"is_array": true, "is_boolean": true, "is_null": true, "is_number": true,
	"is_object": true, "is_set": true, "is_string": true, "type_name": true,

	// Strings.
	"concat": true, "contains": true, "startswith": true, "endswith": true,
	"indexof": true, "indexof_n": true, "lower": true, "upper": true,
	"replace": true, "split": true, "sprintf": true, "substring": true,
	"strings.any_prefix_match": true, "strings.any_suffix_match": true, "strings.count": true,
	"strings.replace_n": true, "strings.reverse": true,
	"trim": true, "trim_left": true, "trim_prefix": true, "trim_right": true,
	"trim_space": true, "trim_suffix": true,

	// Regular expressions and globs.
	"regex.is_valid": true, "regex.match": true, "regex.find_n": true,
	"regex.find_all_string_submatch_n": true, "regex.replace": true, "regex.split": true,
	"glob.match": true, "glob.quote_meta": true,

	// Time, for send windows and dates in a payload.
	"time.add_date": true, "time.clock": true, "time.date": true, "time.diff": true,
	"time.format": true, "time.now_ns": true, "time.parse_duration_ns": true,
	"time.parse_ns": true, "time.parse_rfc3339_ns": true, "time.weekday": true,

	// Encodings, for data files and portal links.
	"json.is_valid": true, "json.marshal": true, "json.marshal_with_options": true, "json.unmarshal": true,
	"base64.encode": true, "base64.decode": true, "base64.is_valid": true,
	"base64url.encode": true, "base64url.encode_no_pad": true, "base64url.decode": true,
	"hex.encode": true, "hex.decode": true,
	"urlquery.encode": true, "urlquery.encode_object": true,
	"urlquery.decode": true, "urlquery.decode_object": true,
}

// capabilities are this OPA version's built-ins narrowed to allowedBuiltins,
// with no network access at all. Every compile of a policy, its tests, a
// bundle or a dry-run candidate uses them.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion() // a fresh copy on every call
	kept := caps.Builtins[:0]
	for _, b := range caps.Builtins {
		if allowedBuiltins[b.Name] {
			kept = append(kept, b)
		}
	}
	caps.Builtins = kept
	caps.AllowNet = []string{} // empty, not nil: no host at all
	return caps
}
