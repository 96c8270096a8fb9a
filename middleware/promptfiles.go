package middleware

import (
	"encoding/json"
	"net/http"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxPromptFileRefs bounds how many distinct output or temp files one
// prompt may name: each may cost a look-up in ComfyUI's history.
const MaxPromptFileRefs = 64

// PromptFiles is what a prompt's string inputs name as files, as
// ComfyUI's loaders resolve them with folder_paths.get_annotated_filepath:
// a value ending in "[output]" or "[temp]" is a file in that folder; any
// other value a file in the input folder.
type PromptFiles struct {
	// Refs are the output and temp files named, each once, by any node:
	// the annotation is ComfyUI's syntax for every node that reads files
	// through folder_paths.
	Refs []OutputFile
	// Escape is the first value of a core loader's input (coreLoaders)
	// that leaves its folder: absolute, or with a ".." element; such a
	// loader reads any file by it. Custom nodes' path inputs are theirs
	// to judge, and are not read here.
	Escape string
	// Ambiguous is set when an object in an input, at any depth, has two
	// members whose names differ only in case among "filename",
	// "subfolder" and "type": ComfyUI keeps both, and which one the
	// gateway's reading of the history would take depends on their order.
	Ambiguous bool
}

// coreLoaders are ComfyUI 0.3.64's nodes that read a file named by an
// input through folder_paths.get_annotated_filepath, which takes an
// absolute path or a ".." as they come.
var coreLoaders = map[string]bool{
	"LoadImage": true, "LoadImageMask": true, "LoadImageOutput": true, "WebcamCapture": true,
	"LoadAudio": true, "LoadVideo": true, "LoadLatent": true, "Load3D": true, "Load3DAnimation": true,
}

// ReadPromptFiles reads the string inputs of a POST /prompt body's
// prompt (its last "prompt" member, as ComfyUI reads it), the strings
// directly inside an object input (Load3D's {"image", "mask"}), and the
// objects at any depth of an input that a history entry's outputs would
// list as a file, were a node to echo them (Preview3D's camera_info). A body or
// a prompt it cannot read names no files: ComfyUI refuses it, or the
// queue share does.
func ReadPromptFiles(body []byte) PromptFiles {
	var pf PromptFiles
	ms, err := readObject(body)
	if err != nil {
		return pf
	}
	var prompt json.RawMessage
	for _, m := range ms {
		if m.key == "prompt" {
			prompt = m.val
		}
	}
	var nodes map[string]struct {
		ClassType string                     `json:"class_type"`
		Inputs    map[string]json.RawMessage `json:"inputs"`
	}
	if json.Unmarshal(prompt, &nodes) != nil {
		return pf
	}
	seen := map[OutputFile]bool{}
	note := func(loader bool, v string) {
		f, escapes, ok := annotatedFile(v)
		switch {
		case escapes && pf.Escape == "" && (loader || f.Type == "output" || f.Type == "temp"):
			pf.Escape = v
		case ok && !escapes && !seen[f]:
			seen[f] = true
			pf.Refs = append(pf.Refs, f)
		}
	}
	// claims notes each object, at any depth, that a node echoing it into
	// its UI output (ComfyUI's Preview3D does so with camera_info) would
	// make the prompt's history entry list as an output file (listedFile).
	var claims func(v any)
	claims = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			seenKey := map[string]bool{}
			for k, inner := range x {
				if lk := strings.ToLower(k); lk == "filename" || lk == "subfolder" || lk == "type" {
					pf.Ambiguous = pf.Ambiguous || seenKey[lk]
					seenKey[lk] = true
				}
				claims(inner)
			}
			if raw, err := json.Marshal(x); err == nil && seenKey["filename"] {
				if f, ok := listedFile(raw); ok && !seen[f] {
					seen[f] = true
					pf.Refs = append(pf.Refs, f)
				}
			}
		case []any:
			for _, inner := range x {
				claims(inner)
			}
		}
	}
	for _, n := range nodes {
		loader := coreLoaders[n.ClassType]
		for _, raw := range n.Inputs {
			var v string
			if json.Unmarshal(raw, &v) == nil {
				note(loader, v)
				continue
			}
			var tree any
			if json.Unmarshal(raw, &tree) == nil {
				claims(tree)
			}
			var inner map[string]json.RawMessage
			if json.Unmarshal(raw, &inner) == nil {
				for _, iv := range inner {
					if json.Unmarshal(iv, &v) == nil {
						note(loader, v)
					}
				}
			}
			// A link, a number, a list: not a file name.
		}
	}
	return pf
}

// annotatedFile is the output or temp file a loader reads for value v
// (ok false for an input file), and whether v leaves its folder.
func annotatedFile(v string) (f OutputFile, escapes, ok bool) {
	name := v
	for _, t := range []string{"output", "input", "temp"} {
		if base, cut := strings.CutSuffix(v, "["+t+"]"); cut {
			_, n := utf8.DecodeLastRuneInString(base)
			name, f.Type = base[:len(base)-n], t
			break
		}
	}
	escapes = strings.HasPrefix(name, "/") || name == ".." || strings.HasPrefix(name, "../") ||
		strings.HasSuffix(name, "/..") || strings.Contains(name, "/../")
	if f.Type != "output" && f.Type != "temp" || escapes {
		return f, escapes, false
	}
	sub := path.Dir(path.Clean(name))
	if sub == "." {
		sub = ""
	}
	f.Subfolder, f.Filename = sub, path.Base(path.Clean(name))
	return f, false, true
}

// promptFilesAreOwn refuses (403 not_your_file) a prompt of user's whose
// inputs name an output or temp file that is not user's (as a string, or
// as an object shaped as an output item), or a path leaving ComfyUI's
// input folder; it answers the refusal itself and
// reports false.
func (o OwnPromptsOptions) promptFilesAreOwn(w http.ResponseWriter, r *http.Request, user string, body []byte) bool {
	pf := ReadPromptFiles(body)
	refuse := func(reason string) bool {
		InfoFrom(r).Reason = "own outputs: " + reason
		Refuse(w, r, http.StatusForbidden, CodeNotYourFile, "The prompt names a file that is not yours.", reason)
		return false
	}
	if pf.Ambiguous {
		return refuse("an object in the prompt's inputs names \"filename\", \"subfolder\" or \"type\" twice, in different cases; the file it names cannot be told")
	}
	if pf.Escape != "" {
		return refuse("the input " + strconv.Quote(pf.Escape) + " is a path outside ComfyUI's input folder; name an uploaded file, or an output of yours as \"name.png [output]\"")
	}
	if len(pf.Refs) > MaxPromptFileRefs {
		return refuse("the prompt names " + strconv.Itoa(len(pf.Refs)) + " output or temp files; at most " + strconv.Itoa(MaxPromptFileRefs) + " are checked for one prompt")
	}
	for _, f := range pf.Refs {
		mine, err := o.Outputs.Owns(r.Context(), user, f)
		if err != nil {
			o.Failed(w, r, err)
			return false
		}
		if !mine {
			return refuse("the " + f.Type + " file " + strconv.Quote(path.Join(f.Subfolder, f.Filename)) + " is not listed by any prompt of " + whose(user) + " in ComfyUI's history; a prompt may load the outputs of its user's own prompts only (the operator's, any)")
		}
	}
	return true
}
