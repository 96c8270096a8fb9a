package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/comfyui-auth/comfyui-auth/hashstore"
	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// probeOptions is what one probe needs; runProbe fills it from flags.
type probeOptions struct {
	URL         string
	Token       string
	TokenSource string // where Token came from, for the report
	// HashFile, when readable here, sharpens a 401: the token is diagnosed
	// against it locally, as `token check` does.
	HashFile   string
	AcceptHash bool
	Timeout    time.Duration
}

func runProbe(args []string, getenv env, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("comfyui-auth probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := probeOptions{}
	fs.StringVar(&o.URL, "url", "http://localhost:8188", "the gateway's base `URL`, as clients reach it")
	tokenFlag := fs.String("token", "", "the `value` to send as a Bearer token; - reads it from stdin. Default: the first set of "+strings.Join(clientTokenVars, ", "))
	fs.StringVar(&o.HashFile, "hash-file", defaultHashFile(getenv), "hash `file` to diagnose a 401 against locally, when it is readable here")
	acceptHash, envErr := acceptHashFlag(fs, getenv)
	timeout := durationFlag(fs, "timeout", 10*time.Second, "give up on each request after this `long`")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	if envErr != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), envErr)
		return 2
	}
	o.AcceptHash, o.Timeout = *acceptHash, *timeout
	if *tokenFlag != "" || anySet(getenv, clientTokenVars) {
		v, src, err := pickToken(*tokenFlag, os.Stdin, getenv)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
			return 2
		}
		o.Token, o.TokenSource = v, src
	}
	u, err := normaliseURL(o.URL)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.Name(), err)
		return 2
	}
	o.URL = u
	return probe(context.Background(), o, stdout)
}

func anySet(getenv env, names []string) bool {
	for _, n := range names {
		if v, ok := getenv(n); ok && v != "" {
			return true
		}
	}
	return false
}

func normaliseURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("--url %q is not a base URL such as http://localhost:8188", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// probe calls /readyz, then /system_stats with the token, and explains what
// it saw. It returns 0 when /system_stats answered 200, 1 otherwise. It never
// prints the token, only its fingerprint.
func probe(ctx context.Context, o probeOptions, out io.Writer) int {
	client := &http.Client{
		Timeout:       o.Timeout,
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }

	ready, err := get(ctx, client, o.URL+"/readyz", "")
	if err != nil {
		say("%s", explainConnError(o.URL, o.Timeout, err))
		return 1
	}
	readyReason := ""
	switch ready.status {
	case http.StatusOK:
		say("/readyz: 200, the gateway is ready (a credential is loaded and ComfyUI answers)")
	case http.StatusServiceUnavailable:
		readyReason = ready.field("reason")
		if readyReason == "" {
			say("/readyz: 503, the gateway is up but not ready (it tells why only to loopback and authenticated callers: run `comfyui-auth healthcheck` inside the container, or read the gateway's log)")
		} else {
			say("/readyz: 503, the gateway is up but not ready: %s", readyReason)
		}
	case http.StatusNotFound, http.StatusUnauthorized:
		say("/readyz: %d, so this is not comfyui-auth: ComfyUI itself (perhaps with ComfyUI-Login) or another service answers at %s; check the port mapping", ready.status, o.URL)
	default:
		say("/readyz: unexpected %d: %s", ready.status, ready.excerpt())
	}

	if o.Token == "" {
		say("no token given: pass --token, or set QWEN_API_USER_TOKEN (the raw token from .env.generated); probing without one")
	} else {
		say("sending the token from %s (%d characters, fingerprint %s)", o.TokenSource, len(o.Token), hashstore.Fingerprint(o.Token))
	}
	res, err := get(ctx, client, o.URL+"/system_stats", o.Token)
	if err != nil {
		say("%s", explainConnError(o.URL, o.Timeout, err))
		return 1
	}
	retry := ""
	if ra := res.header.Get("Retry-After"); ra != "" {
		retry = " (Retry-After: " + ra + " s)"
	}
	code := middleware.RefusalCode(res.field("code"))
	if res.status == http.StatusOK {
		v := res.nested("system", "comfyui_version")
		if v == "" {
			v = "(version not reported)"
		}
		say("/system_stats: 200, authenticated; ComfyUI %s answered", v)
		return 0
	}
	codeNote := ""
	if code != "" {
		codeNote = " [code " + string(code) + "]"
	}
	// The gateway's code decides the cause; its sentences are for people
	// and may change. Without a code the answer is ComfyUI's own (or from
	// an older gateway), so only the status is to go by.
	switch {
	case res.status == http.StatusUnauthorized:
		say("/system_stats: 401 Unauthorized%s; the gateway says: %s", codeNote, orNone(res.field("reason")))
		for i, c := range causesOf401(o, code, readyReason) {
			say("  %d. %s", i+1, c)
		}
	case res.status == http.StatusFound, res.status == http.StatusSeeOther:
		say("/system_stats: %d redirect to %s: the server treated this as a browser without a session; API clients must send `Authorization: Bearer <token>`", res.status, res.header.Get("Location"))
	case code == middleware.CodeCrossOrigin:
		say("/system_stats: 403 Forbidden%s: a request made with a session cookie came from another origin; API clients should send the token instead of a cookie, and a reverse proxy that rewrites Host needs --public-url", codeNote)
	case code == middleware.CodeGuestForbidden:
		say("/system_stats: 403 Forbidden%s: this is a guest session, which may only read and queue prompts; log in with the password", codeNote)
	case res.status == http.StatusForbidden:
		say("/system_stats: 403 Forbidden: the credential was accepted but ComfyUI refused the request: its origin check (the Origin header does not match Host: a page on another address, or a reverse proxy in front rewriting Host)")
	case code == middleware.CodeLockedOut:
		say("/system_stats: 429 Too Many Requests%s: this address is locked out after too many failed attempts%s; wait, then fix the token first (`comfyui-auth token check`) so the next try does not extend the lockout", codeNote, retry)
	case code == middleware.CodeClientBusy:
		say("/system_stats: 429 Too Many Requests%s: this address already has token checks waiting%s; send one token at a time and wait for its answer (each different token counts as a failed attempt)", codeNote, retry)
	case code == middleware.CodePoolBusy:
		say("/system_stats: 503 Service Unavailable%s: the gateway is busy checking other tokens%s: %s; retry after the delay; sending the hash instead of the raw token never waits", codeNote, retry, orNone(res.field("reason")))
	case code == middleware.CodeTooManyConnections:
		say("/system_stats: 503 Service Unavailable%s: the gateway's connection limit is reached%s; retry later, and look for a client that opens connections without closing them", codeNote, retry)
	case code == middleware.CodeUpstreamDown, code == "" && res.status == http.StatusBadGateway:
		say("/system_stats: 502 Bad Gateway%s: the token was accepted but ComfyUI behind the gateway is not answering yet: on first start it installs packages and loads models, which takes minutes; watch `docker logs comfyui-qwen`", codeNote)
	case code == middleware.CodeUpstreamTimeout, code == "" && res.status == http.StatusGatewayTimeout:
		say("/system_stats: 504 Gateway Timeout%s: ComfyUI accepted the connection but did not answer in time: it is busy or stuck; watch `docker logs comfyui-qwen`", codeNote)
	case code != "":
		say("/system_stats: %d%s: %s: %s", res.status, codeNote, orNone(res.field("error")), orNone(res.field("reason")))
	default:
		say("/system_stats: unexpected %d: %s", res.status, res.excerpt())
	}
	return 1
}

func orNone(s string) string {
	if s == "" {
		return "(no reason given)"
	}
	return s
}

// causesOf401 lists the likely causes of a 401, most likely first: what the
// gateway's reason and a local diagnosis say, then the mix-ups that caused
// most 401s in the deployment this gateway replaces.
func causesOf401(o probeOptions, code middleware.RefusalCode, readyReason string) []string {
	switch {
	case o.Token == "":
		return []string{"no token was sent: send `Authorization: Bearer <token>` with the raw token from .env.generated (QWEN_API_USER_TOKEN)"}
	case code == middleware.CodeNoCredentials:
		return []string{"the token was sent but the gateway received none: a proxy between here and the gateway strips the Authorization header; let it through, or probe the gateway directly"}
	case code == middleware.CodeNoCredentialLoaded:
		c := "the server has no valid hash file loaded, so it refuses every token"
		if readyReason != "" {
			c += ": " + readyReason
		}
		return []string{c + "; fix the file the container mounts (COMFYUI_AUTH_TOKEN_FILE), then check it with `comfyui-auth token check --hash-file <it>`"}
	case code == middleware.CodeTokenTooLong:
		return []string{"the token is longer than the 72 bytes bcrypt can check: a whole line or file was sent; send the 32-character token from .env.generated"}
	case code == middleware.CodeMalformedHeader:
		return []string{"the Authorization header is malformed: it must be exactly `Bearer <token>`"}
	}
	var causes []string
	local := false
	if o.HashFile != "" {
		if _, err := os.Stat(o.HashFile); err == nil {
			local = true
			d := hashstore.DiagnoseFile(o.HashFile, o.Token, o.AcceptHash)
			switch {
			case d.OK():
				causes = append(causes, fmt.Sprintf("the token is valid for %s here (%s), so the server reads another or a stale file: a single-file bind mount replaced by a rename (an editor, `mv`) keeps the old file inside the container, so restart it or mount the directory; or COMFYUI_AUTH_TOKEN_FILE points at another file (login/PASSWORD versus .secrets/qwen-api-user.token?)", o.HashFile, d.Kind))
			case d.Kind == hashstore.DiagHashItself:
				causes = append(causes, "you sent the hash itself and the server refuses hash tokens (COMFYUI_AUTH_ACCEPT_HASH_TOKEN=false): send the raw token from .env.generated")
			default:
				causes = append(causes, "checked against "+o.HashFile+" here: "+d.Sentence())
			}
		}
	}
	generic := []string{
		"the token and the server's hash are out of sync (a token from an older .env.generated, or a hash regenerated since): run `comfyui-auth token check --hash-file <the file the server mounts>`",
		"the hash was sent as the token but it is not the hash the server has (two hash files out of sync), or hash tokens are off on the server",
		"a hash in a Compose .env or shell lost its `$` signs to interpolation: escape each `$` as `$$` in .env/YAML, or send the raw token",
		"the server still reads an old file: a single-file bind mount replaced by a rename is never seen inside the container; restart it, or mount the .secrets directory",
		"the token was retired by `comfyui-auth token rotate`: use the newest one from .env.generated",
	}
	if !local {
		generic = append(generic, "(no hash file readable here to check the token against: pass --hash-file to narrow this down)")
	}
	return append(causes, generic...)
}

// explainConnError turns a transport failure into what to check.
func explainConnError(base string, timeout time.Duration, err error) string {
	u, _ := url.Parse(base)
	host := u.Host
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("connection refused at %s: nothing listens there. Is the container up (`docker compose ps`)? Is the port published (`ports: \"${COMFYUI_PORT:-8188}:8188\"`), and is COMFYUI_PORT set to another port?", host)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s (%v): check the host name in --url", u.Hostname(), dnsErr.Err)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fmt.Sprintf("%s did not answer within %s: a firewall drops the connection, the host is wrong, or the gateway is stuck", host, timeout)
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Sprintf("%s closed the connection without an answer: is it an HTTPS port probed with http:// (or the reverse)? (%v)", host, err)
	}
	return fmt.Sprintf("cannot reach %s: %v", host, err)
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func get(ctx context.Context, c *http.Client, u, token string) (*answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return &answer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// field returns a top-level string field of a JSON body, "" when absent.
func (a *answer) field(name string) string {
	var m map[string]any
	if json.Unmarshal(a.body, &m) != nil {
		return ""
	}
	s, _ := m[name].(string)
	return s
}

func (a *answer) nested(outer, inner string) string {
	var m map[string]json.RawMessage
	var in map[string]any
	if json.Unmarshal(a.body, &m) != nil || json.Unmarshal(m[outer], &in) != nil {
		return ""
	}
	s, _ := in[inner].(string)
	return s
}

func (a *answer) excerpt() string {
	s := strings.TrimSpace(string(a.body))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
