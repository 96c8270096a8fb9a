package server

import (
	"encoding/json"
	"testing"
)

const testScript = "/comfyui-auth/logout.js"

func TestRewriteExtensionsKeepsOriginalBytes(t *testing.T) {
	tests := []struct{ in, want string }{
		{`["/a.js", "/b.js"]`, `["/a.js", "/b.js","/comfyui-auth/logout.js"]`},
		{"[]\n", `["/comfyui-auth/logout.js"]` + "\n"},
		{` [ "/x.js" ] `, ` [ "/x.js" ,"/comfyui-auth/logout.js"] `},
		{`["/comfyui-auth/logout.js"]`, `["/comfyui-auth/logout.js"]`},
		{`{"not":"a list"}`, `{"not":"a list"}`},
		{`null`, `null`},
		{`["unterminated"`, `["unterminated"`},
		{"\xef\xbb\xbf[]", "\xef\xbb\xbf[]"},
	}
	for _, tc := range tests {
		if got, _ := rewriteExtensions([]byte(tc.in), testScript); string(got) != tc.want {
			t.Errorf("rewrite(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzRewriteExtensions checks that the rewrite either returns the input
// untouched or a JSON array that is the input's array plus the script.
func FuzzRewriteExtensions(f *testing.F) {
	for _, s := range []string{`[]`, `["/a.js"]`, ` [ "/a.js" , 1 , {"x":[]} ] `, `{}`, `null`, `[`, `"x"`, "[]\n\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, changed := rewriteExtensions(in, testScript)
		if !changed {
			if string(out) != string(in) {
				t.Fatalf("unchanged but different: %q -> %q", in, out)
			}
			return
		}
		var before, after []json.RawMessage
		if err := json.Unmarshal(in, &before); err != nil {
			t.Fatalf("changed a body that is not an array: %q", in)
		}
		if err := json.Unmarshal(out, &after); err != nil {
			t.Fatalf("rewrite of %q is not JSON: %q (%v)", in, out, err)
		}
		if len(after) != len(before)+1 {
			t.Fatalf("rewrite of %q has %d items, want %d", in, len(after), len(before)+1)
		}
		var last string
		if json.Unmarshal(after[len(after)-1], &last) != nil || last != testScript {
			t.Fatalf("last item of %q is %s", out, after[len(after)-1])
		}
	})
}
