package fakecomfy_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"image/png"
	"net/url"
	"strings"
	"testing"

	"github.com/comfyui-auth/comfyui-auth/internal/fakecomfy"
)

// TestModelFreeWorkflowRunsAsRealComfyUIDoes pins the fake to what ComfyUI
// 0.3.64 answered to the real-peer suite (docker/realcomfy): for EmptyImage
// feeding an output node, the frames, the history's outputs keyed by the
// output node, the saved file's name and the image's size and colour. The
// fake used to run every prompt as one generic node with an 8x8 image named
// ComfyUI_NNNNN_.png and a JPEG preview frame.
func TestModelFreeWorkflowRunsAsRealComfyUIDoes(t *testing.T) {
	for _, tc := range []struct {
		output, inputs string
		frames         string // as real ComfyUI sends them, without progress_state
		file, typ      string // the first image's name pattern and type; "" for none
		subfolder      string
	}{
		{"SaveImage", `"filename_prefix":"cap"`,
			"execution_start execution_cached executing:1 executing:2 executed execution_success status executing:null",
			"cap_00001_.png", "output", ""},
		// get_save_image_path: the prefix's directory is the subfolder.
		{"SaveImage", `"filename_prefix":"class/./alice/cap"`,
			"execution_start execution_cached executing:1 executing:2 executed execution_success status executing:null",
			"cap_00001_.png", "output", "class/alice"},
		{"PreviewImage", ``,
			"execution_start execution_cached executing:1 executing:2 executed execution_success status executing:null",
			"ComfyUI_temp_", "temp", ""},
		{"SaveImageWebsocket", ``,
			"execution_start execution_cached executing:1 executing:2 progress binary:1/2:16x8 execution_success status executing:null",
			"", "", ""},
	} {
		t.Run(tc.output, func(t *testing.T) {
			_, ts := fakecomfy.Start(t, fakecomfy.Options{})
			c := dialWS(t, ts, "/ws?clientId=w")
			defer c.Close()
			readFrame(t, c)
			inputs := `"images":["1",0]`
			if tc.inputs != "" {
				inputs += "," + tc.inputs
			}
			status, reply := postPrompt(t, ts, fmt.Sprintf(`{"client_id":"w","prompt":{
				"1":{"class_type":"EmptyImage","inputs":{"width":16,"height":8,"batch_size":1,"color":1122867}},
				"2":{"class_type":%q,"inputs":{%s}}}}`, tc.output, inputs))
			id, _ := reply["prompt_id"].(string)
			if status != 200 || id == "" {
				t.Fatalf("POST /prompt: %d %v", status, reply)
			}
			var types []string
			for {
				f := readFrame(t, c)
				if f.bin != nil {
					event, format := binary.BigEndian.Uint32(f.bin), binary.BigEndian.Uint32(f.bin[4:])
					img, err := png.Decode(bytes.NewReader(f.bin[8:]))
					size := "not-a-png"
					if err == nil {
						size = fmt.Sprintf("%dx%d", img.Bounds().Dx(), img.Bounds().Dy())
					}
					types = append(types, fmt.Sprintf("binary:%d/%d:%s", event, format, size))
					continue
				}
				var d struct {
					Node *string `json:"node"`
				}
				_ = json.Unmarshal(f.Data, &d)
				switch {
				case f.Type == "status" && len(types) == 0:
					continue // the queue-update status before execution_start
				case f.Type == "executing" && d.Node == nil:
					types = append(types, "executing:null")
				case f.Type == "executing":
					types = append(types, "executing:"+*d.Node)
				default:
					types = append(types, f.Type)
				}
				if types[len(types)-1] == "executing:null" {
					break
				}
			}
			if got := strings.Join(types, " "); got != tc.frames {
				t.Fatalf("frames:\n got %s\nwant %s", got, tc.frames)
			}

			_, _, b := do(t, "GET", ts.URL+"/history/"+id, "", nil, nil)
			var h map[string]struct {
				Prompt  []any `json:"prompt"`
				Outputs map[string]struct {
					Images []struct{ Filename, Subfolder, Type string } `json:"images"`
				} `json:"outputs"`
			}
			if err := json.Unmarshal(b, &h); err != nil {
				t.Fatalf("history %s: %v", b, err)
			}
			entry := h[id]
			if got := fmt.Sprint(entry.Prompt[4]); got != "[2]" {
				t.Errorf("outputs_to_execute %s, want [2]", got)
			}
			if tc.file == "" {
				if len(entry.Outputs) != 0 {
					t.Fatalf("outputs %+v, want none", entry.Outputs)
				}
				return
			}
			imgs := entry.Outputs["2"].Images
			if len(entry.Outputs) != 1 || len(imgs) != 1 || !strings.HasPrefix(imgs[0].Filename, tc.file) || imgs[0].Type != tc.typ || imgs[0].Subfolder != tc.subfolder {
				t.Fatalf("outputs %+v, want node 2 with one %s image %s/%s*", entry.Outputs, tc.typ, tc.subfolder, tc.file)
			}
			q := url.Values{"filename": {imgs[0].Filename}, "type": {imgs[0].Type}, "subfolder": {imgs[0].Subfolder}}
			code, _, body := do(t, "GET", ts.URL+"/view?"+q.Encode(), "", nil, nil)
			img, err := png.Decode(bytes.NewReader(body))
			if code != 200 || err != nil {
				t.Fatalf("view: %d %v", code, err)
			}
			r, g, bl, _ := img.At(3, 3).RGBA()
			if img.Bounds().Dx() != 16 || img.Bounds().Dy() != 8 || r>>8 != 0x11 || g>>8 != 0x22 || bl>>8 != 0x33 {
				t.Fatalf("image %v colour %x%x%x, want 16x8 of 112233", img.Bounds(), r>>8, g>>8, bl>>8)
			}
		})
	}
}

// TestObjectInfoListsTheModelFreeNodes: the real-peer suite's workflows are
// built from these, and SDKs look their inputs up before queueing.
func TestObjectInfoListsTheModelFreeNodes(t *testing.T) {
	_, ts := fakecomfy.Start(t, fakecomfy.Options{})
	for _, node := range []string{"EmptyImage", "SaveImage", "PreviewImage", "SaveImageWebsocket"} {
		_, _, b := do(t, "GET", ts.URL+"/api/object_info/"+node, "", nil, nil)
		var info map[string]struct {
			Name       string `json:"name"`
			OutputNode bool   `json:"output_node"`
		}
		if err := json.Unmarshal(b, &info); err != nil || info[node].Name != node || info[node].OutputNode != (node != "EmptyImage") {
			t.Fatalf("object_info/%s: %s (%v)", node, b, err)
		}
	}
}
