// Package config reads Tidings' configuration from the environment, validates
// it with every problem reported at once, and never prints a secret.
package config
