package notify

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/smallstep/pkcs7"
	mail "github.com/wneessen/go-mail"
)

// The CMS algorithms: the content under AES-256-CBC (what S/MIME 4.0,
// RFC 8551, requires receivers to read, and what every mail client
// decrypts), its key under RSAES-OAEP. pkcs7 takes them from package
// variables; they are set once here, before any message is built, and
// nothing else in the service uses pkcs7. OAEP's hash stays SHA-1 because
// pkcs7 writes no MGF1 parameter, which then means MGF1 with SHA-1: the
// hash must match it (OAEP's security does not rest on SHA-1's collision
// resistance).
func init() {
	pkcs7.ContentEncryptionAlgorithm = pkcs7.EncryptionAlgorithmAES256CBC
	pkcs7.KeyEncryptionAlgorithm = pkcs7.OIDEncryptionAlgorithmRSAESOAEP
	pkcs7.KeyEncryptionHash = crypto.SHA1
}

// SecurityFor is what the channel guarantees for a tenant's notice to a
// recipient with key k (nil: none): message-level encryption when k can
// still encrypt now and the channel has a signer of k's kind for the
// tenant, as Send then encrypts and signs the message.
func (c *EmailChannel) SecurityFor(tenant string, k *RecipientKey, now time.Time) Security {
	sec := c.Security()
	if k != nil && k.Check(now) == nil {
		_, sec.MessageEncrypted = c.signers.signerFor(tenant, k.Kind)
	}
	return sec
}

// encryptBody sets m's body to e's bodies, signed with the tenant's key
// and encrypted for e.EncryptFor: S/MIME (RFC 8551) as application/pkcs7-mime
// enveloped-data around signed-data, OpenPGP as PGP/MIME (RFC 3156)
// multipart/encrypted around a signed and encrypted message. Only the
// outer headers (From, To, Subject, Date, Message-ID) stay in clear; the
// Subject is the template's, which names no one.
func (c *EmailChannel) encryptBody(m *mail.Msg, e Email) error {
	k := e.EncryptFor
	if err := k.Check(time.Now()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEmail, err)
	}
	s, ok := c.signers.signerFor(e.TenantID, k.Kind)
	if !ok {
		return fmt.Errorf("%w: no %s signer for the tenant", ErrInvalidEmail, k.Kind)
	}
	entity, err := mimeEntity(e)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEmail, err)
	}
	switch k.Kind {
	case KeySMIME:
		env, err := smimeEnvelope(entity, k.cert, s)
		if err != nil {
			return fmt.Errorf("%w: S/MIME: %w", ErrInvalidEmail, err)
		}
		m.SetGenHeader(mail.HeaderContentDisposition, `attachment; filename="smime.p7m"`)
		m.SetBodyString(`application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"`, string(env),
			mail.WithPartEncoding(mail.EncodingB64))
	case KeyOpenPGP:
		armored, err := openPGPMessage(entity, k.entity, s.OpenPGP)
		if err != nil {
			return fmt.Errorf("%w: OpenPGP: %w", ErrInvalidEmail, err)
		}
		// Both parts are ASCII. go-mail writes a "7bit" part
		// quoted-printable, which breaks the armor: "8bit" writes it as is.
		m.SetPGPType(mail.PGPEncrypt)
		m.SetBodyString(mail.TypePGPEncrypted, "Version: 1\r\n", mail.WithPartEncoding(mail.NoEncoding))
		m.AddAlternativeString(mail.TypeAppOctetStream, armored, mail.WithPartEncoding(mail.NoEncoding))
	default:
		return fmt.Errorf("%w: unknown key kind", ErrInvalidEmail)
	}
	return nil
}

// mimeEntity is e's bodies as one MIME entity with CRLF line ends: text
// and HTML as multipart/alternative, or the one there is, each
// quoted-printable in UTF-8.
func mimeEntity(e Email) ([]byte, error) {
	var buf bytes.Buffer
	qpWrite := func(w *bytes.Buffer, body string) error {
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(body)); err != nil {
			return err
		}
		return qp.Close()
	}
	header := func(ctype string) textproto.MIMEHeader {
		return textproto.MIMEHeader{"Content-Type": {ctype + "; charset=UTF-8"}, "Content-Transfer-Encoding": {"quoted-printable"}}
	}
	if e.Text == "" || e.HTML == "" {
		ctype, body := "text/plain", e.Text
		if e.Text == "" {
			ctype, body = "text/html", e.HTML
		}
		buf.WriteString("Content-Type: " + ctype + "; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
		if err := qpWrite(&buf, body); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	mw := multipart.NewWriter(&buf)
	buf.WriteString("Content-Type: multipart/alternative; boundary=\"" + mw.Boundary() + "\"\r\n\r\n")
	for _, p := range []struct{ ctype, body string }{{"text/plain", e.Text}, {"text/html", e.HTML}} {
		w, err := mw.CreatePart(header(p.ctype))
		if err != nil {
			return nil, err
		}
		var pb bytes.Buffer
		if err := qpWrite(&pb, p.body); err != nil {
			return nil, err
		}
		if _, err := w.Write(pb.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// smimeEnvelope signs entity (CMS SignedData, SHA-256, with the signer's
// certificate and chain) as an application/pkcs7-mime signed-data entity
// and encrypts that for to (CMS EnvelopedData): the DER of the envelope.
func smimeEnvelope(entity []byte, to *x509.Certificate, s MessageSigner) ([]byte, error) {
	sd, err := pkcs7.NewSignedData(entity)
	if err != nil {
		return nil, err
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.AddSignerChain(s.Cert, s.Key, s.Chain, pkcs7.SignerInfoConfig{}); err != nil {
		return nil, err
	}
	signed, err := sd.Finish()
	if err != nil {
		return nil, err
	}
	var inner bytes.Buffer
	inner.WriteString("Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n")
	b64 := base64.StdEncoding.EncodeToString(signed)
	for len(b64) > 76 {
		inner.WriteString(b64[:76] + "\r\n")
		b64 = b64[76:]
	}
	inner.WriteString(b64 + "\r\n")
	return pkcs7.Encrypt(inner.Bytes(), []*x509.Certificate{to})
}

// openPGPMessage signs entity with signer and encrypts it for to (AES-256),
// ASCII-armored.
func openPGPMessage(entity []byte, to, signer *openpgp.Entity) (string, error) {
	var out bytes.Buffer
	aw, err := armor.Encode(&out, "PGP MESSAGE", nil)
	if err != nil {
		return "", err
	}
	cfg := &packet.Config{DefaultCipher: packet.CipherAES256, DefaultHash: crypto.SHA256}
	pw, err := openpgp.Encrypt(aw, []*openpgp.Entity{to}, signer, &openpgp.FileHints{IsBinary: true}, cfg)
	if err != nil {
		return "", err
	}
	if _, err := pw.Write(entity); err != nil {
		return "", err
	}
	if err := pw.Close(); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	out.WriteString("\r\n")
	return out.String(), nil
}
