// Package migrations holds the SQL migrations, the only source of Tidings'
// schema, embedded so the binary migrates itself (`tidings migrate`) and the
// tests build their template database from exactly the same files.
package migrations
