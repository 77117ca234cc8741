// Package mailcatch is a local SMTP mail catcher for `tidings dev` and for
// tests: it accepts every message (optionally over STARTTLS with a freshly
// generated self-signed certificate), keeps it in memory and writes it to a
// directory as an .eml file, or for a load measurement only counts it. It owns
// no delivery: nothing it accepts ever leaves the machine.
package mailcatch
