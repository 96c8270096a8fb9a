package server

import (
	"net/url"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/middleware"
)

// TestViewSecondAnnotationDoesNotReachAnotherUsersOutput: ComfyUI reads
// one "[output]", "[input]" or "[temp]" annotation off a /view filename.
// The gateway cuts the last one and forwards the rest as the filename, so
// a name annotated twice ("x.png [output] [input]") or whose last path
// element carries one ("x.png [output]/") must not reach ComfyUI as
// "x.png [output]" under type=input: ComfyUI would cut that annotation in
// turn and serve alice's output to bob as an upload.
func TestViewSecondAnnotationDoesNotReachAnotherUsersOutput(t *testing.T) {
	c := startClass(t, func(cfg *Config) { cfg.ComfyMultiUser = true })
	a1 := c.queue(t, c.alice, "A")
	a2 := c.queueImage(t, c.alice, "alice/pic")
	g1 := c.queueImage(t, c.guest, "")
	c.runAll(t, a1, a2, g1)
	aRoot, aSub, gTemp := c.outputsOf(t, a1)[0], c.outputsOf(t, a2)[0], c.outputsOf(t, g1)[0]
	esc := url.QueryEscape
	for _, q := range []string{
		"filename=" + esc(aRoot.Filename+" [output] [input]"),
		"filename=" + esc(aRoot.Filename+" [output] [temp]"),
		"filename=" + esc(aRoot.Filename+" [output]") + "%2F&type=input",
		"filename=" + esc("x/"+aRoot.Filename+" [output]/") + "&type=input",
		"filename=" + esc(aSub.Filename+" [output] [input]") + "&subfolder=alice",
		"filename=" + esc(aSub.Filename+" [output]x[input]") + "&subfolder=alice",
		"filename=" + esc(gTemp.Filename+" [temp] [input]"),
	} {
		for _, p := range []string{"/view?", "/api/view?"} {
			st, code, body := c.view(t, "GET", p+q, c.bob)
			if st != 404 || code != middleware.CodeNotYourOutput {
				t.Errorf("bob: GET %s%s: %d %s %.40q, want 404 %s", p, q, st, code, body, middleware.CodeNotYourOutput)
			}
		}
	}
}
