package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
)

// maxExtensionsBody bounds how much of an /extensions answer is read to be
// rewritten; a real list is a few KiB. A larger one passes untouched.
const maxExtensionsBody = 1 << 20

// isExtensionsList reports whether resp answers the frontend's request for
// its extension list.
func isExtensionsList(resp *http.Response) bool {
	if resp.Request == nil || resp.Request.Method != http.MethodGet || resp.StatusCode != http.StatusOK {
		return false
	}
	switch resp.Request.URL.EscapedPath() {
	case "/extensions", "/api/extensions":
	default:
		return false
	}
	ce := resp.Header.Get("Content-Encoding")
	return ce == "" || ce == "identity"
}

// addExtensionScript appends script to the JSON list of extension URLs
// ComfyUI returns, so its frontend loads the gateway's Logout button. Only a
// 200 whose whole body is a JSON array is changed, and then only by
// inserting one element before the closing bracket: the original bytes stay
// as they were. Anything else (an error, a compressed or oversized body,
// something that does not parse) passes through byte for byte.
func addExtensionScript(resp *http.Response, script string) error {
	if !isExtensionsList(resp) || resp.Body == nil {
		return nil
	}
	head, err := io.ReadAll(io.LimitReader(resp.Body, maxExtensionsBody+1))
	if err != nil || len(head) > maxExtensionsBody {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		return nil
	}
	_ = resp.Body.Close()
	out, changed := rewriteExtensions(head, script)
	resp.Body = io.NopCloser(bytes.NewReader(out))
	if changed {
		resp.ContentLength = int64(len(out))
		resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
		resp.Header.Del("ETag")
	}
	return nil
}

// rewriteExtensions returns body with script appended when body is a JSON
// array that does not list it yet; otherwise body itself and false.
func rewriteExtensions(body []byte, script string) ([]byte, bool) {
	var list []json.RawMessage
	if err := json.Unmarshal(body, &list); err != nil || list == nil {
		return body, false
	}
	for _, item := range list {
		var s string
		if json.Unmarshal(item, &s) == nil && s == script {
			return body, false
		}
	}
	trimmed := bytes.TrimRight(body, " \t\r\n")
	end := len(trimmed) - 1 // the closing bracket: Unmarshal accepted an array
	quoted, _ := json.Marshal(script)
	out := make([]byte, 0, len(body)+len(quoted)+2)
	out = append(out, trimmed[:end]...)
	if len(list) > 0 {
		out = append(out, ',')
	}
	out = append(out, quoted...)
	out = append(out, body[end:]...)
	return out, true
}
