package main

// Certificates and keys for a private, loopback-only control plane. They are made once per data
// directory with Go's crypto packages (no openssl on the path is needed) and reused on restart,
// so a kubeconfig written earlier keeps working.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki names the files of one data directory's certificates.
type pki struct {
	dir string
}

func (p pki) path(name string) string { return filepath.Join(p.dir, name) }

func (p pki) CACert() string      { return p.path("ca.crt") }
func (p pki) CAKey() string       { return p.path("ca.key") }
func (p pki) ServingCert() string { return p.path("apiserver.crt") }
func (p pki) ServingKey() string  { return p.path("apiserver.key") }
func (p pki) AdminCert() string   { return p.path("admin.crt") }
func (p pki) AdminKey() string    { return p.path("admin.key") }
func (p pki) SAKey() string       { return p.path("sa.key") }
func (p pki) SAPub() string       { return p.path("sa.pub") }

// certValidity is long enough that a cached data directory never expires during development.
const certValidity = 10 * 365 * 24 * time.Hour

// servingDNSNames are the names in-cluster clients and host-side clients use for the apiserver.
var servingDNSNames = []string{
	"localhost",
	"kubernetes",
	"kubernetes.default",
	"kubernetes.default.svc",
	"kubernetes.default.svc.cluster.local",
}

// servingIPs are loopback plus the first address of --service-cluster-ip-range (10.0.0.0/24).
var servingIPs = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")}

// ensure creates whatever is missing; existing files are kept so restarts reuse the same CA.
func (p pki) ensure() error {
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return err
	}
	if !exists(p.CACert()) || !exists(p.CAKey()) {
		if err := p.makeCA(); err != nil {
			return fmt.Errorf("CA: %w", err)
		}
	}
	caCert, caKey, err := p.loadCA()
	if err != nil {
		return fmt.Errorf("load CA: %w", err)
	}
	if !exists(p.ServingCert()) || !exists(p.ServingKey()) {
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: "kube-apiserver"},
			DNSNames:    servingDNSNames,
			IPAddresses: servingIPs,
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if err := issue(tmpl, caCert, caKey, p.ServingCert(), p.ServingKey()); err != nil {
			return fmt.Errorf("serving certificate: %w", err)
		}
	}
	if !exists(p.AdminCert()) || !exists(p.AdminKey()) {
		tmpl := &x509.Certificate{
			// O=system:masters is the group the default RBAC policy grants everything.
			Subject:     pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if err := issue(tmpl, caCert, caKey, p.AdminCert(), p.AdminKey()); err != nil {
			return fmt.Errorf("admin certificate: %w", err)
		}
	}
	if !exists(p.SAKey()) || !exists(p.SAPub()) {
		if err := p.makeSAKeys(); err != nil {
			return fmt.Errorf("service-account keys: %w", err)
		}
	}
	return nil
}

func (p pki) makeCA() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "lamassu-backup-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := writeKey(p.CAKey(), key); err != nil {
		return err
	}
	return writePEM(p.CACert(), "CERTIFICATE", der, 0o644)
}

func (p pki) loadCA() (*x509.Certificate, crypto.Signer, error) {
	certPEM, err := os.ReadFile(p.CACert())
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, nil, errors.New("ca.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := os.ReadFile(p.CAKey())
	if err != nil {
		return nil, nil, err
	}
	kblock, _ := pem.Decode(keyPEM)
	if kblock == nil {
		return nil, nil, errors.New("ca.key holds no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("ca.key is not a signing key")
	}
	return cert, signer, nil
}

// makeSAKeys uses RSA so that tokens are RS256, which every JWT library accepts.
func (p pki) makeSAKeys() error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := writeKey(p.SAKey(), key); err != nil {
		return err
	}
	return writePEM(p.SAPub(), "PUBLIC KEY", pub, 0o644)
}

func issue(tmpl *x509.Certificate, ca *x509.Certificate, caKey crypto.Signer, certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := newSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(keyPath, key); err != nil {
		return err
	}
	return writePEM(certPath, "CERTIFICATE", der, 0o644)
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

func writeKey(path string, key crypto.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der, 0o600)
}

// writePEM writes through a temporary file so a crash never leaves half a key behind.
func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
	return writeAtomic(path, data, mode)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
