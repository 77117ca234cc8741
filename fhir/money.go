package fhir

import (
	"log/slog"
	"math/big"
	"strings"
)

// Money is an amount as the EOB states it.
type Money struct {
	Value    string // decimal as in the JSON, e.g. "45.20"; a sum keeps the largest scale of its terms
	Currency string // ISO 4217 code, "" when the EOB gives none
}

// LogValue keeps amounts tied to a person out of logs.
func (Money) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// maxDecimalLen and maxExponent bound what parseDecimal accepts, so a
// hostile amount such as 1e999999999 cannot make us allocate.
const (
	maxDecimalLen = 64
	maxExponent   = 30
)

// decimal is an exact decimal: unscaled × 10^-scale.
type decimal struct {
	unscaled *big.Int
	scale    int
}

// parseDecimal reads a JSON number exactly.
func parseDecimal(s string) (decimal, bool) {
	if s == "" || len(s) > maxDecimalLen {
		return decimal{}, false
	}
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant = s[:i]
		e := s[i+1:]
		neg := false
		if e != "" && (e[0] == '+' || e[0] == '-') {
			neg = e[0] == '-'
			e = e[1:]
		}
		if e == "" || len(e) > 2 {
			return decimal{}, false
		}
		for _, c := range e {
			if c < '0' || c > '9' {
				return decimal{}, false
			}
			exp = exp*10 + int(c-'0')
		}
		if exp > maxExponent {
			return decimal{}, false
		}
		if neg {
			exp = -exp
		}
	}
	sign := ""
	if strings.HasPrefix(mant, "-") {
		sign, mant = "-", mant[1:]
	}
	intPart, frac, hasPoint := strings.Cut(mant, ".")
	if intPart == "" || (hasPoint && frac == "") || !allDigits(intPart) || !allDigits(frac) {
		return decimal{}, false
	}
	u, ok := new(big.Int).SetString(sign+intPart+frac, 10)
	if !ok {
		return decimal{}, false
	}
	d := decimal{unscaled: u, scale: len(frac) - exp}
	if d.scale < 0 {
		d.unscaled.Mul(d.unscaled, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(-d.scale)), nil))
		d.scale = 0
	}
	return d, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ParseDecimal reads a FHIR (JSON) decimal exactly, as unscaled × 10^-scale
// with scale ≥ 0. Leading zeros are tolerated; "+", ".5", "5." and spaces are
// not; hostile sizes ("1e999999999") are refused rather than allocated.
func ParseDecimal(s string) (unscaled *big.Int, scale int, ok bool) {
	d, ok := parseDecimal(s)
	if !ok {
		return nil, 0, false
	}
	return d.unscaled, d.scale, true
}

// rescale returns d with the given (larger or equal) scale.
func (d decimal) rescale(scale int) decimal {
	if scale <= d.scale {
		return d
	}
	f := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale-d.scale)), nil)
	return decimal{unscaled: new(big.Int).Mul(d.unscaled, f), scale: scale}
}

// add returns d + o exactly.
func (d decimal) add(o decimal) decimal {
	s := max(d.scale, o.scale)
	a, b := d.rescale(s), o.rescale(s)
	return decimal{unscaled: new(big.Int).Add(a.unscaled, b.unscaled), scale: s}
}

// String formats d with exactly d.scale fraction digits.
func (d decimal) String() string {
	digits := new(big.Int).Abs(d.unscaled).String()
	sign := ""
	if d.unscaled.Sign() < 0 {
		sign = "-"
	}
	if d.scale == 0 {
		return sign + digits
	}
	if len(digits) <= d.scale {
		digits = strings.Repeat("0", d.scale-len(digits)+1) + digits
	}
	cut := len(digits) - d.scale
	return sign + digits[:cut] + "." + digits[cut:]
}

// sumMoney adds amounts exactly. ok is false when there is nothing to add,
// an amount is not a number, or the currencies differ (a sum across
// currencies means nothing, and a notice must not show one).
func sumMoney(amounts []Money) (Money, bool) {
	if len(amounts) == 0 {
		return Money{}, false
	}
	var total decimal
	for i, a := range amounts {
		d, ok := parseDecimal(a.Value)
		if !ok || a.Currency != amounts[0].Currency {
			return Money{}, false
		}
		if i == 0 {
			total = d
		} else {
			total = total.add(d)
		}
	}
	if len(amounts) == 1 {
		return amounts[0], true
	}
	return Money{Value: total.String(), Currency: amounts[0].Currency}, true
}
