package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testCA is a throw-away certificate authority for TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "comfyui-auth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a leaf certificate for 127.0.0.1 with the given serial to
// certFile and keyFile.
func (ca *testCA) issue(t *testing.T, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	must(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	// Key first, then certificate: a reader between the two writes sees a
	// mismatched pair and must keep the old one.
	must(t, os.WriteFile(keyFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	must(t, os.WriteFile(certFile+".tmp", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	must(t, os.Rename(keyFile+".tmp", keyFile))
	must(t, os.Rename(certFile+".tmp", certFile))
}

func startTLSGateway(t *testing.T) (*gateway, *testCA, string, string) {
	t.Helper()
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca.issue(t, 100, certFile, keyFile)
	g := startGateway(t, gatewayOpts{configure: func(c *Config) { c.TLSCert, c.TLSKey = certFile, keyFile }})
	g.URL = "https://" + strings.TrimPrefix(g.URL, "http://")
	return g, ca, certFile, keyFile
}

func TestTLSServesHTTP2WithModernDefaults(t *testing.T) {
	g, ca, _, _ := startTLSGateway(t)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true,
	}}
	req, _ := http.NewRequest("GET", g.URL+"/api/system_stats", nil)
	req.Header.Set("Authorization", "Bearer "+seedHash)
	resp, err := client.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
		t.Fatalf("got %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	if resp.TLS.Version < tls.VersionTLS13 {
		t.Errorf("negotiated TLS version %x, want 1.3 with a modern client", resp.TLS.Version)
	}
	rec, _ := g.Fake.LastRequest("/api/system_stats")
	if p := rec.Header.Get("X-Forwarded-Proto"); p != "https" {
		t.Errorf("upstream X-Forwarded-Proto = %q, want https", p)
	}
	// TLS 1.1 and older are refused.
	old := &tls.Config{RootCAs: ca.pool, MaxVersion: tls.VersionTLS11, MinVersion: tls.VersionTLS10}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(g.URL, "https://"), old)
	if err == nil {
		conn.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}
}

func TestWebsocketsWorkOverWSS(t *testing.T) {
	g, ca, _, _ := startTLSGateway(t)
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: ca.pool}}
	conn, resp, err := d.Dial("wss"+strings.TrimPrefix(g.URL, "https")+"/ws?clientId=c1&token="+url.QueryEscape(seedHash), http.Header{"Origin": {g.URL}})
	if err != nil {
		t.Fatalf("wss dial: %v (%v)", err, resp)
	}
	defer conn.Close()
	must(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	var msg map[string]any
	must(t, conn.ReadJSON(&msg))
	if msg["type"] != "status" {
		t.Fatalf("first frame %v, want ComfyUI's status", msg)
	}
	// Without a credential the handshake is refused with 401.
	_, resp, err = d.Dial("wss"+strings.TrimPrefix(g.URL, "https")+"/ws?clientId=c2", nil)
	if err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("wss without credentials: err %v, response %v; want 401", err, resp)
	}
}

func TestTLSCertificateIsReloadedWhenTheFilesChange(t *testing.T) {
	g, ca, certFile, keyFile := startTLSGateway(t)
	addr := strings.TrimPrefix(g.URL, "https://")
	serial := func() int64 {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 100 {
		t.Fatalf("serial %d, want 100", s)
	}
	// A broken pair keeps the old certificate in service, logged once.
	must(t, os.WriteFile(certFile, []byte("not a certificate"), 0o644))
	eventually(t, 5*time.Second, "the broken pair is noticed", func() bool {
		if s := serial(); s != 100 {
			t.Fatalf("serial %d after a broken write, want the last good 100", s)
		}
		return strings.Contains(g.Logs.String(), "keeping the last good TLS certificate")
	})
	ca.issue(t, 101, certFile, keyFile)
	eventually(t, 5*time.Second, "the renewed certificate is served", func() bool { return serial() == 101 })
	if n := strings.Count(g.Logs.String(), "keeping the last good TLS certificate"); n > 1 {
		t.Errorf("a broken pair was reported %d times, want once", n)
	}
}

// The Secure flag on the real Set-Cookie of POST /login follows how the
// browser reached the gateway. X-Forwarded-Proto is believed from
// --trusted-proxies only: a peer outside them, on loopback or a private
// address alike, cannot choose the flag.
func TestSecureCookiesFollowTLSAndTrustedProxies(t *testing.T) {
	tests := []struct {
		name      string
		trusted   string // --trusted-proxies
		publicURL string
		proto     string // X-Forwarded-Proto sent by the peer (127.0.0.1)
		want      bool
	}{
		{"plain HTTP", "", "", "", false},
		{"untrusted peer claims https, no trusted proxies", "", "", "https", false},
		{"untrusted peer claims https, other proxies trusted", "10.0.0.0/8", "", "https", false},
		{"trusted proxy says https", "127.0.0.0/8", "", "https", true},
		{"trusted proxy says https, last of a chain", "127.0.0.0/8", "", "http, https", true},
		{"trusted proxy says http", "127.0.0.0/8", "", "http", false},
		{"https public URL", "", "https://comfy.example", "", true},
		{"http public URL, untrusted peer claims https", "", "http://comfy.example", "https", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := startLoginGateway(t, func(c *Config) { c.TrustedProxies, c.PublicURL = tc.trusted, tc.publicURL })
			headers := []string{formType}
			if tc.proto != "" {
				headers = append(headers, "X-Forwarded-Proto: "+tc.proto)
			}
			resp := g.do(t, "POST", "/login", form(url.Values{"password": {testPassword}}), headers...)
			if got := sessionCookie(t, resp).Secure; got != tc.want {
				t.Errorf("Secure = %v, want %v", got, tc.want)
			}
			warned := strings.Contains(g.Logs.String(), "ignoring X-Forwarded-Proto")
			if wantWarn := !tc.want && strings.Contains(tc.proto, "https"); warned != wantWarn {
				t.Errorf("warning about an untrusted X-Forwarded-Proto logged: %v, want %v", warned, wantWarn)
			}
		})
	}
	t.Run("direct TLS", func(t *testing.T) {
		g, ca, _, _ := startTLSGateway(t)
		client := &http.Client{
			Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := client.PostForm(g.URL+"/login", url.Values{"password": {seedToken}})
		must(t, err)
		resp.Body.Close()
		if !sessionCookie(t, resp).Secure {
			t.Error("session cookie over direct TLS lacks Secure")
		}
	})
}

// sessionCookie is the session cookie a login answer set; it fails the
// test when there is none.
func sessionCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == "comfyui_auth_session" && c.Value != "" {
			rememberSecret(c.Value)
			return c
		}
	}
	t.Fatalf("login answered %d with no session cookie", resp.StatusCode)
	return nil
}

// A certificate file that blocks on open (a FIFO here; a stalled network
// mount in real life) must not hold up handshakes: the check of the files
// runs beside them, and they are served the pair in service meanwhile.
func TestHandshakesDoNotWaitForTheCertificateFiles(t *testing.T) {
	g, ca, certFile, _ := startTLSGateway(t)
	addr := strings.TrimPrefix(g.URL, "https://")
	serial := func() int64 {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.pool})
		if err != nil {
			t.Fatalf("handshake while the certificate file blocks: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if s := serial(); s != 100 {
		t.Fatalf("serial %d, want 100", s)
	}
	fifo := certFile + ".fifo"
	must(t, syscall.Mkfifo(fifo, 0o644))
	must(t, os.Rename(fifo, certFile))
	// Whoever is blocked opening the FIFO gets EOF when a writer comes and
	// goes; O_RDWR never blocks on Linux.
	release := func() {
		if w, err := os.OpenFile(certFile, os.O_RDWR, 0); err == nil {
			w.Close()
		}
	}
	t.Cleanup(release)

	// Handshakes across several check intervals: one of them starts the
	// check that blocks on the FIFO, and every one must still complete.
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		if s := serial(); s != 100 {
			t.Fatalf("serial %d, want the pair in service, 100", s)
		}
	}
	// The check really was stuck on the file all along: a reader is still
	// waiting for a writer (opening for write without blocking succeeds
	// only then).
	w, err := os.OpenFile(certFile, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("no check is blocked on the certificate file (%v): the test did not exercise a blocking read", err)
	}
	w.Close()
	eventually(t, 5*time.Second, "the unreadable pair is reported", func() bool {
		return strings.Contains(g.Logs.String(), "keeping the last good TLS certificate")
	})
	if s := serial(); s != 100 {
		t.Fatalf("serial %d after the failed reload, want 100", s)
	}
}
