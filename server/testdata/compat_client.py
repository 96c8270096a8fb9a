#!/usr/bin/env python3
"""ComfyUI API client doing what the seed deployment's notebooks do, used to
check the gateway is a drop-in for them. Debian's python3-requests and
python3-websocket only.

usage: compat_client.py BASE_URL TOKEN
Prints one line per step and exits non-zero on the first failure.
"""
import io
import json
import sys
import time
import uuid
import urllib.parse

import requests
import websocket

# A first raw-token request waits for one cost-12 bcrypt check, which under
# the race detector on a loaded 2-core machine has taken over 10 s. The
# timeout bounds a hang; it is not a speed target.
TIMEOUT = 60


def main():
    base, token = sys.argv[1], sys.argv[2]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    client_id = str(uuid.uuid4())

    def step(name, ok, detail=""):
        print(f"{'ok' if ok else 'FAIL'} {name} {detail}".rstrip(), flush=True)
        if not ok:
            sys.exit(1)

    r = requests.get(f"{base}/system_stats", headers=headers, timeout=TIMEOUT)
    step("system_stats", r.status_code == 200 and "comfyui_version" in r.json()["system"], str(r.status_code))

    r = requests.get(f"{base}/system_stats", timeout=TIMEOUT)
    step("no token is refused", r.status_code == 401 and r.json()["error"] == "Authentication required.", str(r.status_code))

    ws_host = base.replace("http://", "ws://", 1)
    ws = websocket.create_connection(
        f"{ws_host}/ws?clientId={client_id}&token={urllib.parse.quote(token, safe='')}", timeout=TIMEOUT)
    first = json.loads(ws.recv())
    step("websocket status frame", first.get("type") == "status", first.get("type", ""))

    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    files = {"image": ("input.png", io.BytesIO(png), "image/png")}
    r = requests.post(f"{base}/upload/image", headers={"Authorization": headers["Authorization"]},
                      files=files, data={"type": "input", "overwrite": "true"}, timeout=TIMEOUT)
    step("upload/image", r.status_code == 200 and r.json().get("name") == "input.png", str(r.status_code))

    prompt = {"prompt": {"1": {"class_type": "LoadImage", "inputs": {"image": "input.png"}},
                         "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0]}}},
              "client_id": client_id}
    r = requests.post(f"{base}/prompt", headers=headers, json=prompt, timeout=TIMEOUT)
    step("prompt queued", r.status_code == 200 and "prompt_id" in r.json(), str(r.status_code))
    prompt_id = r.json()["prompt_id"]

    done = False
    deadline = time.time() + 20
    while time.time() < deadline and not done:
        msg = ws.recv()
        if isinstance(msg, str):
            ev = json.loads(msg)
            done = ev.get("type") == "executing" and ev["data"].get("node") is None \
                and ev["data"].get("prompt_id") == prompt_id
    step("websocket reports the run finished", done)
    ws.close()

    outputs = None
    deadline = time.time() + 20
    while time.time() < deadline and outputs is None:
        r = requests.get(f"{base}/history/{prompt_id}", headers=headers, timeout=TIMEOUT)
        if r.status_code == 200 and prompt_id in r.json():
            outputs = r.json()[prompt_id]["outputs"]
        else:
            time.sleep(0.2)
    step("history has the outputs", bool(outputs))

    image = next(img for node in outputs.values() for img in node.get("images", []))
    params = urllib.parse.urlencode({"filename": image["filename"], "subfolder": image.get("subfolder", ""),
                                     "type": image.get("type", "output")})
    r = requests.get(f"{base}/view?{params}", headers=headers, timeout=TIMEOUT)
    step("view the output", r.status_code == 200 and len(r.content) > 0, f"{r.status_code} {len(r.content)} bytes")

    r = requests.get(f"{base}/queue", headers=headers, timeout=TIMEOUT)
    step("queue", r.status_code == 200 and "queue_running" in r.json(), str(r.status_code))
    r = requests.get(f"{base}/history", headers=headers, params={"max_items": 5}, timeout=TIMEOUT)
    step("history max_items", r.status_code == 200, str(r.status_code))
    r = requests.post(f"{base}/free", headers=headers, json={"unload_models": False, "free_memory": True}, timeout=TIMEOUT)
    step("free", r.status_code == 200, str(r.status_code))
    print("all steps passed")


if __name__ == "__main__":
    main()
