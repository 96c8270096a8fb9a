#!/usr/bin/env python3
"""Runs ComfyUI's own script_examples (patched by script_examples.patch in
host, port, auth and workflow only) and checks what they did.

usage: COMFYUI_SERVER=host:port COMFYUI_TOKEN=... run_examples.py DIR
"""
import json
import os
import runpy
import struct
import sys
import time
import urllib.request

d = sys.argv[1]
server, token = os.environ["COMFYUI_SERVER"], os.environ["COMFYUI_TOKEN"]


def history():
    req = urllib.request.Request(f"http://{server}/history", headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


# websockets_api_example.py: queues the prompt, follows it on the websocket,
# then reads /history and /view; "images" holds the PNGs it downloaded.
g = runpy.run_path(os.path.join(d, "websockets_api_example.py"), run_name="__main__")
pngs = [b for imgs in g["images"].values() for b in imgs]
if len(pngs) != 1 or pngs[0][:8] != b"\x89PNG\r\n\x1a\n" or struct.unpack(">II", pngs[0][16:24]) != (64, 48):
    fail(f"websockets_api_example.py: want one 64x48 PNG, got {[len(b) for b in pngs]}")
print("ok websockets_api_example.py: one 64x48 PNG through /ws, /history and /view")

# basic_api_example.py only queues: its prompt must show up in /history.
before = set(history())
runpy.run_path(os.path.join(d, "basic_api_example.py"), run_name="__main__")
deadline = time.time() + 60
while time.time() < deadline:
    new = [v for k, v in history().items() if k not in before]
    if new and new[0].get("status", {}).get("completed"):
        break
    time.sleep(0.2)
else:
    fail("basic_api_example.py: its prompt did not complete within 60 s")
print("ok basic_api_example.py: its prompt completed")
print("script_examples: both ran unchanged but for host, port, auth and workflow")
