package server

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// certReloader serves the certificate pair from disk and picks up a renewed
// pair (certbot, cert-manager, a cron job) without restart, the way the hash
// file is. A handshake starts a look at the files' size and modification
// time at most once per checkEvery, in the background: no handshake ever
// waits for the disk, so a stalled network mount or a file that blocks on
// open slows no client. A pair that fails to load keeps the last good one in
// service and is reported once, not once per handshake.
type certReloader struct {
	certFile, keyFile string
	checkEvery        time.Duration
	logger            zerolog.Logger

	cert      atomic.Pointer[tls.Certificate]
	nextCheck atomic.Int64 // UnixNano before which no check starts
	checking  atomic.Bool  // a check is running; it alone touches the fields below

	stamp      string // size and mtime of both files when cert was loaded
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
	c.cert.Store(&cert)
	c.stamp = stamp
	c.nextCheck.Store(time.Now().Add(c.checkEvery).UnixNano())
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

// GetCertificate is tls.Config.GetCertificate. It answers with the pair in
// service at once; a due check of the files runs beside it, and a renewed
// pair serves the handshakes that come after the check.
func (c *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if now := time.Now(); now.UnixNano() >= c.nextCheck.Load() && c.checking.CompareAndSwap(false, true) {
		c.nextCheck.Store(now.Add(c.checkEvery).UnixNano())
		go func() {
			defer c.checking.Store(false)
			c.reload()
		}()
	}
	return c.cert.Load(), nil
}

// reload runs in one goroutine at a time (checking).
func (c *certReloader) reload() {
	stamp, err := c.stampNow()
	if err == nil && stamp == c.stamp {
		return
	}
	if err == nil {
		var cert tls.Certificate
		cert, err = tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err == nil {
			c.cert.Store(&cert)
			c.stamp, c.lastLogged = stamp, ""
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
