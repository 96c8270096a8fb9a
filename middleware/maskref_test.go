package middleware

import (
	"encoding/json"
	"path"
	"strings"
	"testing"
)

// FuzzMaskOriginal feeds arbitrary original_ref fields to the reader of
// the file a mask upload names: whatever it accepts is a plain file
// inside its directory, and the original_ref the gateway forwards in its
// place resolves to that same file.
func FuzzMaskOriginal(f *testing.F) {
	for _, s := range []string{
		`{"filename":"ComfyUI_00001_.png","subfolder":"","type":"output"}`,
		`{"filename":"pic_00001_.png","subfolder":"alice"}`,
		`{"filename":"alice/pic.png [output]","type":"input"}`,
		`{"filename":"x","filename":"alice\/pic.png","subfolder":"bob/.."}`,
		`{"filename":"pic.png [output] [input]"}`,
		`{"filename":"../x.png"}`,
		`{"filename":"x.png","subfolder":"/abs"}`,
		`{"filename":7}`,
		`[]`,
		`{"filename":"x.png","type":"models"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		file, err := MaskOriginal(raw)
		if err != nil {
			return
		}
		switch {
		case file.Type != "output" && file.Type != "temp" && file.Type != "input":
			t.Fatalf("%q: type %q", raw, file.Type)
		case file.Filename == "" || file.Filename == "." || file.Filename == ".." || strings.Contains(file.Filename, "/"):
			t.Fatalf("%q: filename %q", raw, file.Filename)
		case file.Subfolder != "" && (path.Clean(file.Subfolder) != file.Subfolder ||
			strings.HasPrefix(file.Subfolder, "/") || file.Subfolder == ".." || strings.HasPrefix(file.Subfolder, "../")):
			t.Fatalf("%q: subfolder %q", raw, file.Subfolder)
		}
		fw, _ := json.Marshal(map[string]string{"filename": file.Filename, "subfolder": file.Subfolder, "type": file.Type})
		if again, err := MaskOriginal(fw); err != nil || again != file {
			t.Fatalf("%q: checked %+v, forwarded %s resolves to %+v (%v)", raw, file, fw, again, err)
		}
	})
}

func TestMaskOriginal(t *testing.T) {
	for _, c := range []struct {
		raw  string
		want OutputFile
		ok   bool
	}{
		{`{"filename":"a.png","subfolder":"","type":"output"}`, OutputFile{"output", "", "a.png"}, true},
		{`{"filename":"a.png"}`, OutputFile{"output", "", "a.png"}, true},
		{`{"filename":"alice/a.png","subfolder":"x/.."}`, OutputFile{"output", "alice", "a.png"}, true},
		{`{"filename":"a.png [temp]","type":"input"}`, OutputFile{"temp", "", "a.png"}, true},
		{`{"filename":"a.png","type":"input","type":"temp"}`, OutputFile{"temp", "", "a.png"}, true},
		{`{"filename":"a.png","subfolder":"../output"}`, OutputFile{}, false},
		{`{"filename":"a.png [output] [input]"}`, OutputFile{}, false},
		{`{"filename":"a..png"}`, OutputFile{}, false},
		{`{"filename":"a.png","type":null}`, OutputFile{}, false},
		{`{"filename":"a.png"} x`, OutputFile{}, false},
	} {
		got, err := MaskOriginal([]byte(c.raw))
		if (err == nil) != c.ok || c.ok && got != c.want {
			t.Errorf("MaskOriginal(%s) = %+v, %v; want %+v, ok %v", c.raw, got, err, c.want, c.ok)
		}
	}
}
