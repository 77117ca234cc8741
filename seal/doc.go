// Package seal owns envelope encryption of PHI at rest outside Postgres' clear
// columns: Asynq task payloads, sealed resource and contact columns. Every
// ciphertext is AES-256-GCM and names the key that sealed it, so keys rotate
// without downtime: new data is sealed with the primary key, old data still opens.
package seal
