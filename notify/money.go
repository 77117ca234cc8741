package notify

import (
	"math/big"
	"strings"

	"github.com/tidings-health/tidings/fhir"
)

// minorUnits lists the ISO 4217 currencies whose minor unit is not two
// digits; every other currency is shown with two decimals.
var minorUnits = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0,
	"KRW": 0, "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0,
	"XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}

// FormatMoney formats a FHIR decimal amount for a patient, exactly (no
// floating point):
//
//   - USD as "$1,234.50" (thousands separators, two decimals), negative as
//     "-$1,234.50";
//   - another currency as "1234.50 EUR", with the currency's ISO 4217 minor
//     unit (two decimals unless it is one of the few zero- or three-decimal
//     currencies, e.g. "1500 JPY");
//   - no currency as the bare amount, "45.20".
//
// Rounding: an amount with more decimals than the currency has is rounded
// half away from zero ("1.005" → "$1.01", "-1.005" → "-$1.01",
// "1.004" → "$1.00"); an amount that rounds to zero has no minus sign.
//
// The value is a FHIR decimal: an optional "-", digits, an optional
// fraction and an optional exponent ("1.5e2"). A currency is three letters
// (case-insensitive). It returns "" when either is malformed, so an unknown
// amount is never shown as a wrong one.
func FormatMoney(value, currency string) string {
	currency = strings.ToUpper(strings.TrimSpace(currency))
	if currency != "" && !isCurrencyCode(currency) {
		return ""
	}
	unscaled, scale, ok := fhir.ParseDecimal(strings.TrimSpace(value))
	if !ok {
		return ""
	}
	digits := 2
	if d, ok := minorUnits[currency]; ok {
		digits = d
	}
	neg := unscaled.Sign() < 0
	abs := new(big.Int).Abs(unscaled)
	switch {
	case scale > digits:
		pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale-digits)), nil)
		q, r := new(big.Int).QuoRem(abs, pow, new(big.Int))
		if r.Lsh(r, 1).Cmp(pow) >= 0 { // half away from zero
			q.Add(q, big.NewInt(1))
		}
		abs = q
	case scale < digits:
		abs.Mul(abs, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits-scale)), nil))
	}
	if abs.Sign() == 0 {
		neg = false
	}

	s := abs.String()
	if len(s) <= digits {
		s = strings.Repeat("0", digits-len(s)+1) + s
	}
	intPart, frac := s[:len(s)-digits], s[len(s)-digits:]

	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	if currency == "USD" {
		b.WriteByte('$')
		intPart = groupThousands(intPart)
	}
	b.WriteString(intPart)
	if digits > 0 {
		b.WriteByte('.')
		b.WriteString(frac)
	}
	if currency != "" && currency != "USD" {
		b.WriteByte(' ')
		b.WriteString(currency)
	}
	return b.String()
}

func isCurrencyCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range len(s) {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// groupThousands puts a comma between each group of three digits.
func groupThousands(digits string) string {
	if len(digits) <= 3 {
		return digits
	}
	var b strings.Builder
	head := len(digits) % 3
	if head > 0 {
		b.WriteString(digits[:head])
	}
	for i := head; i < len(digits); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(digits[i : i+3])
	}
	return b.String()
}
