package middleware

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzViewedFile feeds arbitrary /view queries to the reader and resolver
// OwnPrompts checks them with. It must not panic; a file it resolves has a
// known type, a plain name and a subfolder without "." or ".." parts; and
// the query the gateway forwards for it resolves to the same file, so
// ComfyUI serves the file that was checked.
func FuzzViewedFile(f *testing.F) {
	for _, q := range []string{
		"filename=ComfyUI_00001_.png&subfolder=&type=output",
		"filename=ComfyUI_00001_.png&subfolder=bob/..",
		"filename=ComfyUI_00001_.png&subfolder=bob%2F..%2Falice",
		"filename=..%2FComfyUI_00001_.png&subfolder=bob",
		"filename=bob/ComfyUI_00001_.png",
		"filename=ComfyUI_00001_.png%20%5Boutput%5D&type=input",
		"filename=ComfyUI_00001_.png%E2%82%AC[temp]&type=input",
		"filename=ComfyUI_00001_.png%20%5Boutput%5D%20%5Binput%5D",
		"filename=x%2FComfyUI_00001_.png%20%5Boutput%5D%2F&type=input",
		"type=input;type=output&filename=ComfyUI_00001_.png",
		"filename=x.png&preview=webp;90&channel=rgb&rand=0.1",
		"filename=a&filename=b&subfolder=./x/&subfolder=y",
		"filename=%ff&subfolder=%00",
		"filename=%zz",
		"subfolder=/abs/output/alice&filename=x.png",
		"filename=+x+.png&subfolder=a+b",
		"filename%ff=b.png&filename=a.png",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := ComfyQuery(raw)
		if err != nil {
			return
		}
		file, ok := ViewedFile(q)
		if !ok {
			return
		}
		switch {
		case file.Type != "output" && file.Type != "temp" && file.Type != "input":
			t.Fatalf("%q: type %q", raw, file.Type)
		case file.Filename == "" || strings.Contains(file.Filename, "/") || file.Filename == "..":
			t.Fatalf("%q: filename %q", raw, file.Filename)
		case file.Subfolder != "" && (path.Clean(file.Subfolder) != file.Subfolder || file.Subfolder == "." ||
			strings.HasPrefix(file.Subfolder, "/") || file.Subfolder == ".." || strings.HasPrefix(file.Subfolder, "../")):
			t.Fatalf("%q: subfolder %q", raw, file.Subfolder)
		}
		fq, err := ComfyQuery(file.query(q))
		if err != nil {
			t.Fatalf("%q: the forwarded query %q does not read back: %v", raw, file.query(q), err)
		}
		if again, ok := ViewedFile(fq); !ok || again != file {
			t.Fatalf("%q: checked %+v, forwarded %q resolves to %+v (%v)", raw, file, file.query(q), again, ok)
		}
		for k, v := range fq {
			if !utf8.ValidString(k) || (k == "filename" || k == "subfolder" || k == "type") && len(v) != 1 {
				t.Fatalf("%q: forwarded %q has %q %q", raw, file.query(q), k, v)
			}
		}
	})
}

// FuzzHistoryOutputs feeds arbitrary ComfyUI /history answers to the
// reader of whose outputs are whose: it must not panic, and every file it
// returns is one /view could be asked for, never an input file.
func FuzzHistoryOutputs(f *testing.F) {
	f.Add([]byte(`{"p1":{"prompt":[0,"p1",{},{},[]],"outputs":{"9":{"images":[{"filename":"ComfyUI_00001_.png","subfolder":"","type":"output"}]}}}}`))
	f.Add([]byte(`{"p1":{"outputs":{"9":{"images":[{"filename":"../x.png","subfolder":"a/../..","type":"temp"}],"text":["hi"],"gifs":[{"filename":"a.gif"}]}}}}`))
	f.Add([]byte(`{"p1":{"outputs":{"9":{"images":[{"filename":"x.png","type":"input"},{"filename":7}]}}}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		entries, err := HistoryOutputs(bytes.NewReader(raw), []byte("k"))
		if err != nil {
			return
		}
		for _, e := range entries {
			for _, file := range e.Files {
				if file.Type == "input" || file.Filename == "" || strings.Contains(file.Filename, "/") {
					t.Fatalf("%q: file %+v", raw, file)
				}
			}
		}
	})
}

// noHistory is a read of an empty ComfyUI history that counts its calls.
func noHistory(calls *int) func(context.Context, int) ([]PromptOutputs, error) {
	return func(context.Context, int) ([]PromptOutputs, error) {
		*calls++
		return nil, nil
	}
}

// TestOutputListedByTwoUsersIsNobodys: a file two users' history entries
// list (a name ComfyUI used again after its file was deleted, or a node
// listing a file it did not write) is neither's to view.
func TestOutputListedByTwoUsersIsNobodys(t *testing.T) {
	var calls int
	o := NewOutputOwners(noHistory(&calls), nil)
	shared, own := OutputFile{"output", "", "a.png"}, OutputFile{"output", "", "b.png"}
	o.Learn([]PromptOutputs{{Owner: "alice", Files: []OutputFile{shared, own}}, {Owner: "bob", Files: []OutputFile{shared}}})
	for _, c := range []struct {
		user string
		file OutputFile
		want bool
	}{{"alice", shared, false}, {"bob", shared, false}, {"alice", own, true}, {"bob", own, false}} {
		if got, err := o.Owns(context.Background(), c.user, c.file); err != nil || got != c.want {
			t.Errorf("%s owns %s: %v %v, want %v", c.user, c.file.Filename, got, err, c.want)
		}
	}
}

// TestOutputIndexKeepsTheNewestWithinItsBound: a whole history of more
// files than MaxIndexedOutputs keeps its newest entries' files.
func TestOutputIndexKeepsTheNewestWithinItsBound(t *testing.T) {
	entries := make([]PromptOutputs, MaxIndexedOutputs/2+10)
	for i := range entries {
		entries[i] = PromptOutputs{Owner: "alice", Files: []OutputFile{
			{"output", "", fmt.Sprintf("a_%06d_.png", i)}, {"temp", "", fmt.Sprintf("t_%06d_.png", i)}}}
	}
	o := NewOutputOwners(func(context.Context, int) ([]PromptOutputs, error) { return entries, nil }, nil)
	o.gap = 0
	oldest, newest := entries[0].Files[0], entries[len(entries)-1].Files[1]
	if mine, err := o.Owns(context.Background(), "alice", newest); err != nil || !mine {
		t.Fatalf("the newest file: %v %v", mine, err)
	}
	if len(o.owners) != MaxIndexedOutputs {
		t.Fatalf("the index holds %d files, want its bound %d", len(o.owners), MaxIndexedOutputs)
	}
	if mine, _ := o.Owns(context.Background(), "alice", oldest); mine {
		t.Fatal("the oldest file is indexed beyond the bound")
	}
}

// TestFailedHistoryReadIsNotAnAnswer: when ComfyUI's history cannot be
// read, the caller gets the error, not a "not yours".
func TestFailedHistoryReadIsNotAnAnswer(t *testing.T) {
	down := errors.New("ComfyUI is down")
	o := NewOutputOwners(func(context.Context, int) ([]PromptOutputs, error) { return nil, down }, nil)
	if _, err := o.Owns(context.Background(), "alice", OutputFile{"output", "", "a.png"}); !errors.Is(err, down) {
		t.Fatalf("Owns: %v, want the read's error", err)
	}
}

// FuzzPromptFiles feeds arbitrary POST /prompt bodies to the reader of
// the files a prompt's inputs name. It must not panic; every file it
// returns is an output or temp file with a plain name and a subfolder
// without "." or ".." parts.
func FuzzPromptFiles(f *testing.F) {
	f.Add([]byte(`{"prompt":{"1":{"class_type":"LoadImageOutput","inputs":{"image":"alice/pic_00001_.png [output]"}}}}`))
	f.Add([]byte(`{"prompt":{"1":{"class_type":"LoadImage","inputs":{"image":"../output/x.png","mask":["2",0]}}},"prompt":{}}`))
	f.Add([]byte(`{"prompt":{"1":{"inputs":{"text":"a cat in /tmp/ and ../","a":"/abs.png","b":"x[temp]","c":"€[output]"}}}}`))
	f.Add([]byte(`{"prompt":{"1":{"class_type":"Load3D","inputs":{"image":{"image":"/etc/x.png","mask":"m.png [temp]"}}}}}`))
	f.Add([]byte(`{"prompt":{"1":{"class_type":"Preview3D","inputs":{"camera_info":{"filename":"pic_00001_.png","subfolder":"alice"}}}}}`))
	f.Add([]byte(`{"prompt":{"1":{"inputs":{"c":{"filename":"a.png","FileName":"b.png"},"d":{"__value__":[{"filename":"x/y.png","type":"temp"}]}}}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		pf := ReadPromptFiles(body)
		// A node that echoes each input into its UI output, as Preview3D
		// does camera_info, makes the history list what the history reader
		// finds there: each such file must be among the checked ones.
		var prompt struct {
			Prompt map[string]struct {
				Inputs map[string]json.RawMessage `json:"inputs"`
			} `json:"prompt"`
		}
		if !pf.Ambiguous && json.Unmarshal(body, &prompt) == nil {
			refs := map[OutputFile]bool{}
			for _, r := range pf.Refs {
				refs[r] = true
			}
			for _, n := range prompt.Prompt {
				for _, raw := range n.Inputs {
					h := `{"p":{"outputs":{"1":{"result":["x",` + string(raw) + `]}}}}`
					entries, err := HistoryOutputs(strings.NewReader(h), []byte("k"))
					if err != nil || len(entries) != 1 {
						continue
					}
					for _, listed := range entries[0].Files {
						if !refs[listed] {
							t.Fatalf("%q: an echo of input %s lists %+v, which the prompt check did not see (%+v)", body, raw, listed, pf.Refs)
						}
					}
				}
			}
		}
		for _, file := range pf.Refs {
			if file.Type != "output" && file.Type != "temp" || file.Filename == "" || file.Filename == ".." ||
				strings.Contains(file.Filename, "/") ||
				file.Subfolder != "" && (path.Clean(file.Subfolder) != file.Subfolder || strings.HasPrefix(file.Subfolder, "/") ||
					file.Subfolder == ".." || strings.HasPrefix(file.Subfolder, "../")) {
				t.Fatalf("%q: file %+v", body, file)
			}
		}
	})
}

// TestPromptFilesReadsLoaderValuesAsComfyUIDoes pins annotatedFile to
// folder_paths.get_annotated_filepath.
func TestPromptFilesReadsLoaderValuesAsComfyUIDoes(t *testing.T) {
	for _, c := range []struct {
		value   string
		file    OutputFile // zero: not an output or temp file
		escapes bool
	}{
		{"ComfyUI_00001_.png [output]", OutputFile{"output", "", "ComfyUI_00001_.png"}, false},
		{"a/./b/x.png [temp]", OutputFile{"temp", "a/b", "x.png"}, false},
		{"x.png[output]", OutputFile{"output", "", "x.pn"}, false}, // name[:-9]: one character more
		{"x.png", OutputFile{}, false},
		{"x.png [input]", OutputFile{}, false},
		{"../output/x.png", OutputFile{}, true},
		{"/root/ComfyUI/output/x.png", OutputFile{}, true},
		{"a/../../x.png [output]", OutputFile{}, true},
		{"a/.. [output]", OutputFile{}, true},
		{"a cat at ../ and /x", OutputFile{}, false},
		{"/x and more", OutputFile{}, true}, // judged only as a core loader's input
	} {
		f, escapes, ok := annotatedFile(c.value)
		if escapes != c.escapes || ok != (c.file != OutputFile{}) || ok && f != c.file {
			t.Errorf("%q: %+v escapes=%v ok=%v, want %+v escapes=%v", c.value, f, escapes, ok, c.file, c.escapes)
		}
	}
}
