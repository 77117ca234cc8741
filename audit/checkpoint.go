package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tidings-health/tidings/seal"
)

// Checkpoint is a signed statement that a tenant's chain had Size rows,
// ending in Head, at At. It lives in audit_checkpoints and, one JSON line
// each, in a file per tenant outside the database.
type Checkpoint struct {
	TenantID  string    `json:"tenant"`
	Size      int64     `json:"size"`
	Head      Hex       `json:"head"`
	At        time.Time `json:"at"`
	KeyID     string    `json:"key_id"`
	Signature []byte    `json:"signature"`
}

// Hex is a hash, written in hexadecimal in JSON.
type Hex []byte

func (h Hex) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

func (h *Hex) UnmarshalText(b []byte) error {
	raw, err := hex.DecodeString(string(b))
	*h = raw
	return err
}

// CheckpointText is what a checkpoint's signature covers.
func CheckpointText(c Checkpoint) []byte {
	return fmt.Appendf(nil, "tidings audit checkpoint v1\ntenant %s\nsize %d\nhead %x\nat %s\n",
		strconv.Quote(c.TenantID), c.Size, []byte(c.Head), c.At.UTC().Format(time.RFC3339Nano))
}

// Signer signs checkpoints with an Ed25519 key.
type Signer struct {
	KeyID string
	key   ed25519.PrivateKey
}

// ParseSigningKey reads TIDINGS_AUDIT_SIGNING_KEY: "id:base64 of a 32-byte
// Ed25519 seed".
func ParseSigningKey(spec string) (*Signer, error) {
	keys, err := seal.ParseKeys(spec)
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, errors.New("want exactly one signing key")
	}
	for id, seed := range keys {
		return &Signer{KeyID: id, key: ed25519.NewKeyFromSeed(seed)}, nil
	}
	panic("unreachable")
}

// String names the key without its bytes, should it be printed.
func (s *Signer) String() string { return "audit checkpoint signing key " + s.KeyID }

// Sign fills in the key id and the signature. At is kept to the
// microsecond, as the database stores it.
func (s *Signer) Sign(c Checkpoint) Checkpoint {
	c.At = c.At.UTC().Truncate(time.Microsecond)
	c.KeyID = s.KeyID
	c.Signature = ed25519.Sign(s.key, CheckpointText(c))
	return c
}

// PublicKeyLine is the public key as "id:base64", what --public-key files hold.
func (s *Signer) PublicKeyLine() string {
	return s.KeyID + ":" + base64.StdEncoding.EncodeToString(s.key.Public().(ed25519.PublicKey))
}

// PublicKeys verify checkpoints, by signing key id.
type PublicKeys map[string]ed25519.PublicKey

// ParsePublicKeys reads "id:base64" entries, one a line or comma-separated;
// lines starting with # are comments.
func ParsePublicKeys(text string) (PublicKeys, error) {
	var entries []string
	for _, line := range strings.Split(text, "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			entries = append(entries, line)
		}
	}
	keys, err := seal.ParseKeys(strings.Join(entries, ","))
	if err != nil {
		return nil, err
	}
	out := PublicKeys{}
	for id, k := range keys {
		out[id] = ed25519.PublicKey(k)
	}
	return out, nil
}

// Verify checks a checkpoint's signature.
func (p PublicKeys) Verify(c Checkpoint) error {
	key, ok := p[c.KeyID]
	if !ok {
		return fmt.Errorf("signed with unknown key %q", c.KeyID)
	}
	if !ed25519.Verify(key, CheckpointText(c), c.Signature) {
		return errors.New("signature does not verify")
	}
	return nil
}

// CheckpointFile is where a tenant's checkpoints are kept in dir.
func CheckpointFile(dir, tenant string) string {
	return filepath.Join(dir, url.PathEscape(tenant)+".jsonl")
}

// ReadCheckpointFile reads every checkpoint of a file; a missing file has none.
func ReadCheckpointFile(path string) ([]Checkpoint, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Checkpoint
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		var c Checkpoint
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			return out, fmt.Errorf("%s line %d is not a checkpoint", filepath.Base(path), n)
		}
		out = append(out, c)
	}
	return out, sc.Err()
}

// appendMissing appends to a checkpoint file, holding an exclusive lock on
// it, the checkpoints missing returns for the size the file ends at, and
// syncs them to disk.
func appendMissing(path string, missing func(fileSize int64) ([]Checkpoint, error)) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	last, torn, err := lastSize(f)
	if err != nil {
		return err
	}
	cps, err := missing(last)
	if err != nil || len(cps) == 0 {
		return err
	}
	var buf bytes.Buffer
	if torn {
		buf.WriteByte('\n') // keep what follows a line of its own
	}
	for _, c := range cps {
		line, err := json.Marshal(c)
		if err != nil {
			return err
		}
		buf.Write(append(line, '\n'))
	}
	if _, err := f.Write(buf.Bytes()); err != nil {
		return err
	}
	return f.Sync()
}

// lastSize reads the size of the last whole checkpoint line of a file, and
// whether the file ends in a partial line.
func lastSize(f *os.File) (size int64, torn bool, err error) {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return 0, false, err
	}
	from := max(0, st.Size()-64<<10)
	tail := make([]byte, st.Size()-from)
	if _, err := f.ReadAt(tail, from); err != nil && !errors.Is(err, io.EOF) {
		return 0, false, err
	}
	torn = tail[len(tail)-1] != '\n'
	lines := bytes.Split(bytes.TrimRight(tail, "\n"), []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var c Checkpoint
		if json.Unmarshal(lines[i], &c) == nil && c.Size > 0 {
			return c.Size, torn, nil
		}
	}
	return 0, torn, nil
}
