package notify

import "testing"

func TestFormatMoney(t *testing.T) {
	tests := []struct {
		value, currency, want string
	}{
		{"45.20", "USD", "$45.20"},
		{"45.2", "USD", "$45.20"},
		{"1234.5", "USD", "$1,234.50"},
		{"0", "USD", "$0.00"},
		{"0.00", "USD", "$0.00"},
		{"1000000", "USD", "$1,000,000.00"},
		{"999.999", "USD", "$1,000.00"},
		{"123456789012345678901234567890.01", "USD", "$123,456,789,012,345,678,901,234,567,890.01"},
		{"-12.5", "USD", "-$12.50"},
		{"-1234.56", "USD", "-$1,234.56"},
		{" 80 ", " usd ", "$80.00"},
		// More than two decimals: round half away from zero.
		{"1.005", "USD", "$1.01"},
		{"1.004", "USD", "$1.00"},
		{"2.675", "USD", "$2.68"}, // 2.675 is below 2.675 as a float64; exact decimal rounds up
		{"-1.005", "USD", "-$1.01"},
		{"-0.004", "USD", "$0.00"}, // rounds to zero: no minus sign
		{"0.125", "USD", "$0.13"},
		// Exponents are valid FHIR decimals.
		{"1.5e2", "USD", "$150.00"},
		{"45E-1", "USD", "$4.50"},
		{"1e30", "USD", "$1,000,000,000,000,000,000,000,000,000,000.00"},
		// Other currencies: code after the amount, ISO 4217 minor units.
		{"45.2", "EUR", "45.20 EUR"},
		{"1234.5", "eur", "1234.50 EUR"},
		{"-3", "GBP", "-3.00 GBP"},
		{"1500", "JPY", "1500 JPY"},
		{"1500.5", "JPY", "1501 JPY"},
		{"1.2345", "KWD", "1.235 KWD"},
		// No currency: the bare amount.
		{"45.2", "", "45.20"},
		// Unknown or malformed: empty, never a wrong amount.
		{"", "USD", ""},
		{"abc", "USD", ""},
		{"1,000", "USD", ""},
		{"+5", "USD", ""},
		{".5", "USD", ""},
		{"5.", "USD", ""},
		{"--5", "USD", ""},
		{"5e", "USD", ""},
		{"1e31", "USD", ""},
		{"1e999999999", "USD", ""},
		{"NaN", "USD", ""},
		{"12", "US", ""},
		{"12", "US$", ""},
		{"12", "DOLLARS", ""},
	}
	for _, tt := range tests {
		if got := FormatMoney(tt.value, tt.currency); got != tt.want {
			t.Errorf("FormatMoney(%q, %q) = %q, want %q", tt.value, tt.currency, got, tt.want)
		}
	}
}
