package main

import (
	"encoding/json"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// comfyArgparse is ComfyUI's own definition of --listen and --port
// (comfy/cli_args.py), beside the other options whose names share a prefix
// with them, so that abbreviations resolve exactly as in ComfyUI. It prints
// the values ComfyUI would listen on.
const comfyArgparse = `
import argparse, json, sys
p = argparse.ArgumentParser()
p.add_argument("--listen", type=str, default="127.0.0.1", metavar="IP", nargs="?", const="0.0.0.0,::")
p.add_argument("--port", type=int, default=8188)
p.add_argument("--preview-method", type=str, default="none")
p.add_argument("--preview-size", type=int, default=512)
p.add_argument("--lowvram", action="store_true")
p.add_argument("--log-stdout", action="store_true")
p.add_argument("--cpu", action="store_true")
p.add_argument("--use-split-cross-attention", action="store_true")
a = p.parse_args(json.load(sys.stdin))
print(json.dumps({"listen": a.listen, "port": a.port}))
`

// TestComfyUIListensOnLoopbackWhateverItsArguments feeds ComfyUI's
// arguments, in every form argparse accepts (abbreviations such as --liste
// and --po, "=" forms, repeats, a bare --listen), through the entrypoint and
// then through ComfyUI's real argparse definitions: the address ComfyUI ends
// up listening on must be 127.0.0.1 and the port the internal one.
func TestComfyUIListensOnLoopbackWhateverItsArguments(t *testing.T) {
	const suffix = "--listen 127.0.0.1 --port 8189"
	tests := []struct {
		name  string
		in    string
		want  string // the final argv
		notes int    // overridden values explained in the log
	}{
		{"the deployment's command", "venv/bin/python3 main.py --listen 0.0.0.0 --port 8188 --preview-method auto",
			"venv/bin/python3 main.py --listen 0.0.0.0 --port 8188 --preview-method auto " + suffix, 2},
		{"abbreviation after a loopback --listen", "python3 main.py --listen 127.0.0.1 --port 8189 --liste 0.0.0.0",
			"python3 main.py --listen 127.0.0.1 --port 8189 --liste 0.0.0.0 " + suffix, 1},
		{"equals forms", "python3 main.py --listen=0.0.0.0 --port=8188",
			"python3 main.py --listen=0.0.0.0 --port=8188 " + suffix, 2},
		{"shortest abbreviations", "python3 main.py --li 0.0.0.0 --po 8188",
			"python3 main.py --li 0.0.0.0 --po 8188 " + suffix, 2},
		{"abbreviations with equals", "python3 main.py --lis=0.0.0.0,:: --po=8188 --cpu",
			"python3 main.py --lis=0.0.0.0,:: --po=8188 --cpu " + suffix, 2},
		{"port abbreviation after the right port", "python3 main.py --port 8189 --po 8188",
			"python3 main.py --port 8189 --po 8188 " + suffix, 1},
		{"bare --listen means all interfaces", "python3 main.py --listen --cpu",
			"python3 main.py --listen --cpu " + suffix, 1},
		{"already loopback", "python3 main.py --listen 127.0.0.1 --port 8189",
			"python3 main.py --listen 127.0.0.1 --port 8189 " + suffix, 0},
		{"main.py without flags", "python3 main.py", "python3 main.py " + suffix, 0},
		{"a launcher passing ComfyUI's flags on", "comfy launch -- --liste 0.0.0.0",
			"comfy launch -- --liste 0.0.0.0 " + suffix, 1},
		{"other command left alone", "sh -c true", "sh -c true", 0},
	}
	python, pyErr := exec.LookPath("/usr/bin/python3") // a pyenv shim costs seconds per start
	if pyErr != nil {
		python, pyErr = exec.LookPath("python3")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, notes, err := confineToLoopback(strings.Fields(tt.in), 8189)
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Fields(tt.want); !reflect.DeepEqual(got, want) {
				t.Errorf("argv\n got  %q\n want %q", got, want)
			}
			if len(notes) != tt.notes {
				t.Errorf("%d notes, want %d: %q", len(notes), tt.notes, notes)
			}
			i := indexOf(got, "main.py")
			if i < 0 {
				return
			}
			if pyErr != nil {
				t.Skip("no python3 to run ComfyUI's argparse definitions")
			}
			in, _ := json.Marshal(got[i+1:])
			cmd := exec.Command(python, "-c", comfyArgparse)
			cmd.Stdin = strings.NewReader(string(in))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("argparse refused %q: %v\n%s", got[i+1:], err, out)
			}
			var parsed struct {
				Listen string
				Port   int
			}
			if err := json.Unmarshal(out, &parsed); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if parsed.Listen != "127.0.0.1" || parsed.Port != 8189 {
				t.Errorf("ComfyUI would listen on %s port %d, want 127.0.0.1 port 8189 (argv %q)", parsed.Listen, parsed.Port, got)
			}
		})
	}
}

func indexOf(s []string, base string) int {
	for i, a := range s {
		if a == base || strings.HasSuffix(a, "/"+base) {
			return i
		}
	}
	return -1
}

// TestScriptsThatPublishComfyUIAreRefusedInEveryForm: a script passed as one
// argument cannot be appended to, so a non-loopback --listen in it, spelled
// in any form argparse accepts, is refused.
func TestScriptsThatPublishComfyUIAreRefusedInEveryForm(t *testing.T) {
	for _, script := range []string{
		"exec python main.py --listen 0.0.0.0",
		"exec python main.py --liste 0.0.0.0 --port 8189",
		"exec python main.py --li=0.0.0.0",
		"exec python main.py --listen",
		"exec python main.py --lis --cpu",
	} {
		if _, _, err := confineToLoopback([]string{"bash", "-c", script}, 8189); err == nil {
			t.Errorf("script %q was accepted", script)
		}
	}
	for _, script := range []string{
		"exec python main.py --listen 127.0.0.1",
		"exec python main.py --liste=127.0.0.1 --lowvram",
		"exec python main.py --log-stdout --lowvram",
	} {
		if _, _, err := confineToLoopback([]string{"bash", "-c", script}, 8189); err != nil {
			t.Errorf("script %q was refused: %v", script, err)
		}
	}
}

// TestMultiUserIsAddedToComfyUIsCommand: COMFYUI_AUTH_MULTI_USER starts
// ComfyUI with --multi-user, once, when its command takes ComfyUI's flags.
func TestMultiUserIsAddedToComfyUIsCommand(t *testing.T) {
	cfg, err := entrypointConfigFrom([]string{"python", "main.py"}, []string{"COMFYUI_AUTH_MULTI_USER=yes"})
	if err != nil || !cfg.MultiUser {
		t.Fatalf("MultiUser %v, err %v", cfg.MultiUser, err)
	}
	if _, err := entrypointConfigFrom(nil, []string{"COMFYUI_AUTH_MULTI_USER=maybe"}); err == nil {
		t.Fatal("a bad boolean was accepted")
	}
	tests := []struct {
		in, want string
		forwards bool
	}{
		{"python main.py --listen 127.0.0.1 --port 8189", "python main.py --listen 127.0.0.1 --port 8189 --multi-user", true},
		{"python main.py --multi-user --listen 127.0.0.1 --port 8189", "python main.py --multi-user --listen 127.0.0.1 --port 8189", true},
		{"bash -c run-comfy", "bash -c run-comfy", false},
	}
	for _, tt := range tests {
		got, note := addMultiUser(strings.Fields(tt.in), tt.forwards)
		if strings.Join(got, " ") != tt.want || note == "" {
			t.Errorf("%q: %q (%s), want %q", tt.in, got, note, tt.want)
		}
	}
}
