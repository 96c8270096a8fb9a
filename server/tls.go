package server

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// certReloader serves the certificate pair from disk and picks up a renewed
// pair (certbot, cert-manager, a cron job) without restart, the way the hash
// file is. Handshakes look at the files' size and modification time at most
// once per checkEvery; a pair that fails to load keeps the last good one in
// service and is reported once, not once per handshake.
type certReloader struct {
	certFile, keyFile string
	checkEvery        time.Duration
	logger            zerolog.Logger

	mu         sync.Mutex
	cert       *tls.Certificate
	stamp      string // size and mtime of both files when cert was loaded
	checked    time.Time
	lastLogged string
}

// newCertReloader loads the pair once; an error here stops start-up with a
// sentence saying which file is wrong.
func newCertReloader(certFile, keyFile string, logger zerolog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, checkEvery: time.Second, logger: logger}
	stamp, err := c.stampNow()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s with key %s cannot be loaded: %w (both must be PEM, and the key must match the certificate)", certFile, keyFile, err)
	}
	c.cert, c.stamp, c.checked = &cert, stamp, time.Now()
	return c, nil
}

func (c *certReloader) stampNow() (string, error) {
	var stamp string
	for _, f := range []string{c.certFile, c.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("TLS file %s cannot be read: %w", f, err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return stamp, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= c.checkEvery {
		c.checked = time.Now()
		c.reloadLocked()
	}
	return c.cert, nil
}

func (c *certReloader) reloadLocked() {
	stamp, err := c.stampNow()
	if err == nil && stamp == c.stamp {
		return
	}
	if err == nil {
		var cert tls.Certificate
		cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err == nil {
			c.cert, c.stamp, c.lastLogged = &cert, stamp, ""
			c.logger.Info().Str("cert", c.certFile).Msg("TLS certificate reloaded")
			return
		}
		// A renewal writes two files; the pair may be half-written now.
		// Keep the stamp unchanged so the next check tries again.
	}
	if msg := err.Error(); msg != c.lastLogged {
		c.lastLogged = msg
		c.logger.Warn().Err(err).Str("cert", c.certFile).Str("key", c.keyFile).
			Msg("keeping the last good TLS certificate: the files on disk cannot be loaded as a pair; fix them and they are picked up without restart")
	}
}

// tlsConfig is the gateway's TLS policy: TLS 1.2 or newer (1.3 preferred by
// the standard library), Go's default cipher suites (AEAD only, forward
// secret), HTTP/2 and HTTP/1.1 offered. Websockets use HTTP/1.1 (browsers
// open a separate HTTP/1.1 connection for them), which ALPN allows.
func (c *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: c.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
