package simulator

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// certificates holds a CA made for one Server and the leaf it signed for
// 127.0.0.1, which both listeners present.
type certificates struct {
	caPEM []byte
	pool  *x509.CertPool
	leaf  tls.Certificate
}

// certValidity is long enough for a demo left running, short enough that
// a leaked CA file is of little use.
const certValidity = 30 * 24 * time.Hour

func newCertificates(now time.Time) (certificates, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certificates{}, fmt.Errorf("simulator: CA key: %w", err)
	}
	// Backdated so that a client clock slightly behind ours still accepts it.
	notBefore := now.Add(-time.Hour)
	caTemplate := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{Organization: []string{"defender-enricher simulator"}, CommonName: "simulator CA"},
		NotBefore:             notBefore,
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, &caKey.PublicKey, caKey)
	if err != nil {
		return certificates{}, fmt.Errorf("simulator: CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return certificates{}, fmt.Errorf("simulator: CA certificate: %w", err)
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return certificates{}, fmt.Errorf("simulator: server key: %w", err)
	}
	leafTemplate := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{Organization: []string{"defender-enricher simulator"}, CommonName: "127.0.0.1"},
		NotBefore:    notBefore,
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTemplate, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		return certificates{}, fmt.Errorf("simulator: server certificate: %w", err)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return certificates{
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pool:  pool,
		leaf:  tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: leafKey},
	}, nil
}

func serialNumber() *big.Int {
	b := make([]byte, 16)
	// crypto/rand.Read never returns an error; see its documentation.
	_, _ = rand.Read(b)
	b[0] &= 0x7f // keep it positive, as RFC 5280 requires
	return new(big.Int).SetBytes(b)
}
