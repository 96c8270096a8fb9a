package fakecomfy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"path"
	"time"
)

// The model-free nodes real ComfyUI runs on CPU in well under a second, and
// which the real-peer tests (docker/realcomfy) use: EmptyImage feeding
// SaveImage, PreviewImage or SaveImageWebsocket. For a prompt made only of
// these, the fake does what ComfyUI 0.3.64 does (observed against it): the
// image has the requested size and colour, SaveImage honours its
// filename_prefix, the outputs are keyed by the output node, and
// SaveImageWebsocket sends the PNG as a binary frame. Any other prompt keeps
// the fake's generic one-node run.

// imageNodeInfo is /object_info for those nodes, copied from ComfyUI 0.3.64.
var imageNodeInfo = map[string]json.RawMessage{
	"EmptyImage":         json.RawMessage(`{"input": {"required": {"width": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "height": ["INT", {"default": 512, "min": 1, "max": 16384, "step": 1}], "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}], "color": ["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}]}}, "input_order": {"required": ["width", "height", "batch_size", "color"]}, "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "EmptyImage", "display_name": "EmptyImage", "description": "", "python_module": "nodes", "category": "image", "output_node": false}`),
	"PreviewImage":       json.RawMessage(`{"input": {"required": {"images": ["IMAGE"]}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}, "input_order": {"required": ["images"], "hidden": ["prompt", "extra_pnginfo"]}, "output": [], "output_is_list": [], "output_name": [], "name": "PreviewImage", "display_name": "Preview Image", "description": "Saves the input images to your ComfyUI output directory.", "python_module": "nodes", "category": "image", "output_node": true}`),
	"SaveImageWebsocket": json.RawMessage(`{"input": {"required": {"images": ["IMAGE"]}}, "input_order": {"required": ["images"]}, "output": [], "output_is_list": [], "output_name": [], "name": "SaveImageWebsocket", "display_name": "SaveImageWebsocket", "description": "", "python_module": "custom_nodes.websocket_image_save", "category": "api/image", "output_node": true}`),
	"SaveImage":          json.RawMessage(`{"input": {"required": {"images": ["IMAGE", {"tooltip": "The images to save."}], "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save. This may include formatting information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."}]}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}, "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]}, "output": [], "output_is_list": [], "output_name": [], "name": "SaveImage", "display_name": "Save Image", "description": "Saves the input images to your ComfyUI output directory.", "python_module": "nodes", "category": "image", "output_node": true}`),
}

func init() {
	for name, info := range imageNodeInfo {
		objectInfo[name] = info
	}
}

// imageOutputNodes are the output nodes among the model-free ones.
var imageOutputNodes = map[string]bool{"SaveImage": true, "PreviewImage": true, "SaveImageWebsocket": true, "Preview3D": true}

type imageNode struct {
	ClassType string `json:"class_type"`
	Inputs    struct {
		Width          int    `json:"width"`
		Height         int    `json:"height"`
		BatchSize      int    `json:"batch_size"`
		Color          int    `json:"color"`
		Images         []any  `json:"images"`
		FilenamePrefix string `json:"filename_prefix"`
		// Preview3D's inputs, which its UI output echoes as they are.
		ModelFile  string `json:"model_file"`
		CameraInfo any    `json:"camera_info"`
	} `json:"inputs"`
}

// imageWorkflow parses prompt when it holds only the model-free nodes, each
// output fed by an EmptyImage of the prompt; ok is false otherwise.
func imageWorkflow(prompt map[string]json.RawMessage) (nodes map[string]imageNode, outputs []string, ok bool) {
	nodes = map[string]imageNode{}
	for id, raw := range prompt {
		var n imageNode
		if json.Unmarshal(raw, &n) != nil {
			return nil, nil, false
		}
		switch {
		case n.ClassType == "EmptyImage":
			if n.Inputs.Width < 1 || n.Inputs.Height < 1 || n.Inputs.Width > 16384 || n.Inputs.Height > 16384 {
				return nil, nil, false
			}
		case imageOutputNodes[n.ClassType]:
			outputs = append(outputs, id)
		default:
			return nil, nil, false
		}
		nodes[id] = n
	}
	for _, id := range outputs {
		if nodes[id].ClassType == "Preview3D" {
			continue
		}
		in := nodes[id].Inputs.Images
		if len(in) != 2 {
			return nil, nil, false
		}
		if src, _ := in[0].(string); nodes[src].ClassType != "EmptyImage" {
			return nil, nil, false
		}
	}
	if len(outputs) == 0 {
		return nil, nil, false
	}
	sortNodeIDs(outputs)
	return nodes, outputs, true
}

// solidPNG is EmptyImage's picture: w x h of one 0xRRGGBB colour.
func solidPNG(w, h, rgb int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	c := color.RGBA{uint8(rgb >> 16), uint8(rgb >> 8), uint8(rgb), 255}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

// executeImages runs a model-free prompt with ComfyUI's messages: executing
// per node in order, executed for nodes with a UI output, a PNG binary frame
// (event 1, format 2) for SaveImageWebsocket, then execution_success.
func (q *promptQueue) executeImages(it *queueItem, nodes map[string]imageNode) {
	s, sid := q.s, it.clientID
	var messages [][]any
	add := func(event string, data map[string]any) {
		data["prompt_id"] = it.id
		data["timestamp"] = time.Now().UnixMilli()
		messages = append(messages, []any{event, data})
		s.sendEvent(event, data, sid)
	}
	add("execution_start", map[string]any{})
	add("execution_cached", map[string]any{"nodes": []string{}})

	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	// Sources before outputs, as ComfyUI's topological order runs them.
	sortNodeIDsStable(ids, func(id string) bool { return nodes[id].ClassType == "EmptyImage" })

	outputs := map[string]any{}
	meta := map[string]any{}
	for _, id := range ids {
		n := nodes[id]
		s.sendEvent("executing", map[string]any{"node": id, "display_node": id, "prompt_id": it.id}, sid)
		if n.ClassType == "EmptyImage" {
			continue
		}
		if n.ClassType == "Preview3D" {
			// ComfyUI 0.3.64's Preview3D returns {"ui": {"result":
			// [model_file, camera_info]}}, camera_info as the prompt gave it.
			ui := map[string]any{"result": []any{n.Inputs.ModelFile, n.Inputs.CameraInfo}}
			outputs[id] = ui
			meta[id] = map[string]any{"node_id": id, "display_node": id, "parent_node": nil, "real_node_id": id}
			s.sendEvent("executed", map[string]any{"node": id, "display_node": id, "output": ui, "prompt_id": it.id}, sid)
			continue
		}
		q.imageNodeWork()
		src := nodes[n.Inputs.Images[0].(string)].Inputs
		pic := solidPNG(src.Width, src.Height, src.Color)
		batch := max(1, src.BatchSize)
		var images []map[string]any
		switch n.ClassType {
		case "SaveImageWebsocket":
			for i := 0; i < batch; i++ {
				s.sendEvent("progress", map[string]any{"value": i, "max": batch, "prompt_id": it.id, "node": id}, sid)
				s.sendBinary(BinaryPreviewImage, append([]byte{0, 0, 0, 2}, pic...), sid)
			}
			continue // no UI output: no "executed", nothing in history
		case "SaveImage":
			prefix := n.Inputs.FilenamePrefix
			if prefix == "" {
				prefix = "ComfyUI"
			}
			// get_save_image_path: a prefix "a/b" saves b_00001_.png in
			// subfolder a; one leaving output/ saves nothing (ComfyUI fails
			// the node).
			sub, ok := cleanSubfolder(path.Dir(path.Clean(prefix)))
			base := path.Base(path.Clean(prefix))
			for i := 0; ok && i < batch; i++ {
				name := fmt.Sprintf("%s_%05d_.png", base, q.nextCounter("output", sub+"/"+base))
				s.files.put(fileKey{typ: "output", subfolder: sub, name: name}, pic)
				images = append(images, map[string]any{"filename": name, "subfolder": sub, "type": "output"})
			}
		case "PreviewImage":
			// PreviewImage is SaveImage into temp/ with a random prefix.
			const letters = "abcdefghijklmnopqrstupvxyz"
			suffix := make([]byte, 5)
			for i := range suffix {
				suffix[i] = letters[rand.IntN(len(letters))]
			}
			prefix := "ComfyUI_temp_" + string(suffix)
			for i := 0; i < batch; i++ {
				name := fmt.Sprintf("%s_%05d_.png", prefix, q.nextCounter("temp", prefix))
				s.files.put(fileKey{typ: "temp", name: name}, pic)
				images = append(images, map[string]any{"filename": name, "subfolder": "", "type": "temp"})
			}
		}
		ui := map[string]any{"images": images}
		outputs[id] = ui
		meta[id] = map[string]any{"node_id": id, "display_node": id, "parent_node": nil, "real_node_id": id}
		s.sendEvent("executed", map[string]any{"node": id, "display_node": id, "output": ui, "prompt_id": it.id}, sid)
	}
	add("execution_success", map[string]any{})

	q.mu.Lock()
	q.running = nil
	q.history = append(q.history, historyEntry{id: it.id, data: map[string]any{
		"prompt":  it.tuple(),
		"outputs": outputs,
		"status":  map[string]any{"status_str": "success", "completed": true, "messages": messages},
		"meta":    meta,
	}})
	q.mu.Unlock()
	s.queueUpdated()
	s.sendEvent("executing", map[string]any{"node": nil, "prompt_id": it.id}, sid)
}

// nextCounter is folder_paths.get_save_image_path's counter: one more than
// the highest already used for this prefix in this folder, from 1.
func (q *promptQueue) nextCounter(folder, prefix string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.counters == nil {
		q.counters = map[string]int{}
	}
	k := folder + "\x00" + prefix
	q.counters[k]++
	return q.counters[k]
}

// sortNodeIDsStable orders ids numerically within each group, the group
// where first(id) is true first.
func sortNodeIDsStable(ids []string, first func(string) bool) {
	var a, b []string
	for _, id := range ids {
		if first(id) {
			a = append(a, id)
		} else {
			b = append(b, id)
		}
	}
	sortNodeIDs(a)
	sortNodeIDs(b)
	copy(ids, append(a, b...))
}

// imageNodeWork stands for the time an output node takes in ComfyUI: about
// 50-80 ms on CPU to encode and save a small PNG, between its "executing"
// and its "executed". Clients rely on that gap: @saintno/comfyui-sdk, on the
// first "executing", reads /history and only then listens for "executed";
// a fake answering within the same millisecond made it miss the run, which
// real ComfyUI never did. StepDelay, when set, replaces it.
func (q *promptQueue) imageNodeWork() {
	d := 50 * time.Millisecond
	if q.s.opts.StepDelay > 0 {
		d = q.s.opts.StepDelay
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-q.done:
	}
}
