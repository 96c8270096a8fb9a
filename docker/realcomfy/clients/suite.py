#!/usr/bin/env python3
"""The deployment's notebook clients against a ComfyUI endpoint: Debian's
python3-requests and python3-websocket only, doing what the notebooks and a
browser do.

usage: suite.py --base http://127.0.0.1:PORT --target gateway|fake|login \
                --raw RAW_TOKEN --hash HASH [--idle 65]

Targets:
  gateway  the gateway in front of real ComfyUI 0.3.64
  fake     the gateway in front of internal/fakecomfy: any difference from
           "gateway" means the fake has drifted from real ComfyUI
  login    real ComfyUI with the ComfyUI-Login plugin and no gateway

Every check observes an outcome (a short string such as "200" or
"302 /login") and compares it with what the target should answer. The
gateway's answer is the default; LOGIN_DIFFERENCES lists where ComfyUI-Login
answers otherwise. A listed difference that is no longer observed fails too,
so the table stays true.

Prints one line per check and exits 1 if any failed.
"""
import argparse
import io
import json
import os
import random
import struct
import sys
import threading
import time
import urllib.parse
import uuid
import zlib

import requests
import websocket

# Where ComfyUI-Login answers differently from the gateway: check name ->
# (what ComfyUI-Login answers, why). The README's table is made from this.
LOGIN_DIFFERENCES = {
    "raw token as Bearer": (
        "401", "the plugin compares the Bearer token with the hash string, so the raw token is refused"),
    "raw token as ?token=": ("401", "likewise for the query parameter"),
    "websocket with the raw token as ?token=": ("401", "likewise on the websocket"),
    "lower-case bearer scheme": (
        "401", "the plugin matches the scheme 'Bearer' case-sensitively (RFC 7235 says it is case-insensitive)"),
    "websocket without a token, Accept: text/html": (
        "302 /login", "the plugin redirects any request whose Accept has text/html, websocket upgrades included"),
    "old cookie replayed after logout": (
        "200", "the plugin's logout writes a new cookie but does not revoke the old one"),
    "empty Bearer token": (
        "500", "the plugin splits the header on spaces and crashes on a missing token"),
}

PROMPT_TIMEOUT = 60  # seconds for a model-free prompt on a loaded 2-core machine

results = []  # (name, ok, line)
lock = threading.Lock()


def report(name, ok, line):
    with lock:
        results.append((name, ok, line))
        print(line, flush=True)


class Suite:
    def __init__(self, args):
        self.base = args.base.rstrip("/")
        self.ws_base = "ws" + self.base[len("http"):]
        self.target = args.target
        self.raw = args.raw
        self.hash = args.hash
        self.idle = args.idle
        # The credential each flow uses: the raw token where it works, the
        # hash for ComfyUI-Login, which only knows the hash.
        self.token = self.hash if self.target == "login" else self.raw
        self.auth = {"Authorization": "Bearer " + self.token}

    # expect NAME OBSERVED GATEWAY: the check passes when OBSERVED is what the
    # target should answer.
    def expect(self, name, observed, want):
        observed = str(observed)
        diff = LOGIN_DIFFERENCES.get(name) if self.target == "login" else None
        if diff is not None:
            if observed == diff[0]:
                report(name, True, f"PASS {name}: {observed} (differs from the gateway's {want}: {diff[1]})")
            elif observed == want:
                report(name, False, f"FAIL {name}: {observed}, as the gateway; the listed difference "
                                     f"'{diff[1]}' is gone: update LOGIN_DIFFERENCES and the README")
            else:
                report(name, False, f"FAIL {name}: got {observed}, want {diff[0]} (ComfyUI-Login)")
            return observed == diff[0]
        ok = observed == want
        report(name, ok, f"{'PASS' if ok else 'FAIL'} {name}: {observed}" + ("" if ok else f", want {want}"))
        return ok

    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        return requests.get(self.base + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 30)
        return requests.post(self.base + path, **kw)

    def ws(self, query="", **kw):
        """Opens /ws; returns (socket, "101") or (None, "STATUS [Location]").
        websocket-client sends Origin: <the URL's origin> unless origin= says
        otherwise (an Origin in header= would be a second one)."""
        url = f"{self.ws_base}/ws?clientId={kw.pop('client_id', uuid.uuid4().hex)}{query}"

        def answer(status, headers):
            loc = ""
            for k, v in (headers or {}).items():
                if k.lower() == "location":
                    loc = " " + urllib.parse.urlsplit(v).path
            return None, f"{status}{loc}"
        try:
            # redirect_limit=0: a redirect is an answer to record, not to follow;
            # websocket-client then returns a "connected" socket with that status.
            ws = websocket.create_connection(url, timeout=30, redirect_limit=0, **kw)
        except websocket.WebSocketBadStatusException as e:
            return answer(e.status_code, e.resp_headers)
        if ws.getstatus() != 101:
            got = answer(ws.getstatus(), ws.getheaders())
            ws.close()
            return got
        return ws, "101"

    def q(self, token):
        return "&token=" + urllib.parse.quote(token, safe="")

    # --- checks -------------------------------------------------------------

    def credentials(self):
        for label, tok in (("raw token", self.raw), ("hash", self.hash)):
            r = self.get("/system_stats", headers={"Authorization": "Bearer " + tok})
            self.expect(f"{label} as Bearer", r.status_code, "200")
            r = self.get("/system_stats?token=" + urllib.parse.quote(tok, safe=""))
            self.expect(f"{label} as ?token=", r.status_code, "200")
            ws, got = self.ws(self.q(tok))
            self.expect(f"websocket with the {label} as ?token=", got, "101")
            if ws:
                ws.close()
        r = self.get("/system_stats", headers={"Authorization": "bearer " + self.hash})
        self.expect("lower-case bearer scheme", r.status_code, "200")
        ws, got = self.ws(header=["Authorization: Bearer " + self.token])
        self.expect("websocket with an Authorization header", got, "101")
        if ws:
            ws.close()

    def stats_and_object_info(self):
        plain = self.get("/system_stats", headers=self.auth)
        api = self.get("/api/system_stats", headers=self.auth)
        same = plain.status_code == api.status_code == 200 and \
            plain.json()["system"]["comfyui_version"] == api.json()["system"]["comfyui_version"]
        self.expect("system_stats plain and under /api/", f"{api.status_code} same={same}", "200 same=True")
        r = self.get("/object_info", headers=self.auth)
        have = r.status_code == 200 and all(k in r.json() for k in ("EmptyImage", "SaveImage", "SaveImageWebsocket"))
        self.expect("object_info lists EmptyImage, SaveImage, SaveImageWebsocket", f"{r.status_code} {have}", "200 True")
        r = self.get("/api/object_info/EmptyImage", headers=self.auth)
        ok = r.status_code == 200 and "width" in r.json().get("EmptyImage", {}).get("input", {}).get("required", {})
        self.expect("object_info/EmptyImage under /api/", f"{r.status_code} {ok}", "200 True")
        for path in ("/queue", "/history?max_items=5", "/embeddings", "/extensions", "/api/prompt"):
            r = self.get(path, headers=self.auth)
            self.expect(f"GET {path}", f"{r.status_code} {r.headers.get('Content-Type', '').split(';')[0]}",
                        "200 application/json")

    def run_prompt(self, ws, client_id, prompt):
        """Queues PROMPT for CLIENT_ID and reads WS until execution_success.
        Returns (status, prompt_id, message types, binary frames)."""
        r = self.post("/prompt", headers=self.auth, json={"prompt": prompt, "client_id": client_id})
        if r.status_code != 200:
            return r.status_code, None, [], []
        pid = r.json()["prompt_id"]
        types, frames = [], []
        deadline = time.time() + PROMPT_TIMEOUT
        ws.settimeout(PROMPT_TIMEOUT)
        while time.time() < deadline:
            msg = ws.recv()
            if isinstance(msg, bytes):
                frames.append(msg)
                continue
            ev = json.loads(msg)
            if ev.get("data", {}).get("prompt_id") not in (None, pid):
                continue
            types.append(ev["type"])
            if ev["type"] in ("execution_success", "execution_error"):
                break
        return 200, pid, types, frames

    def prompt_and_view(self):
        cid = uuid.uuid4().hex
        ws, got = self.ws(self.q(self.token), client_id=cid)
        self.expect("websocket for the prompt", got, "101")
        if not ws:
            return
        first = json.loads(ws.recv())
        self.expect("first websocket message", first.get("type"), "status")
        prefix = "realclients-" + cid[:8]
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0x336699}},
                  "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}}}
        status, pid, types, _ = self.run_prompt(ws, cid, prompt)
        self.expect("POST /prompt (EmptyImage -> SaveImage)", status, "200")
        want = ["execution_start", "executing", "executed", "execution_success"]
        seen = [t for t in want if t in types]
        self.expect("websocket events up to execution_success", " ".join(seen), " ".join(want))
        ws.close()
        if not pid:
            return
        r = self.get(f"/history/{pid}", headers=self.auth)
        entry = r.json().get(pid, {}) if r.status_code == 200 else {}
        images = [img for out in entry.get("outputs", {}).values() for img in out.get("images", [])]
        completed = entry.get("status", {}).get("completed")
        self.expect("history has the SaveImage output", f"{r.status_code} images={len(images)} completed={completed}",
                    "200 images=1 completed=True")
        if not images:
            return
        img = images[0]
        ok_name = img["filename"].startswith(prefix) and img["type"] == "output"
        self.expect("output image record", f"prefix={ok_name} subfolder={img['subfolder']!r}", "prefix=True subfolder=''")
        params = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img["subfolder"], "type": img["type"]})
        r = self.get("/view?" + params, headers=self.auth)
        self.expect("/view returns the output PNG", f"{r.status_code} {r.headers.get('Content-Type')} {png_size(r.content)}",
                    "200 image/png 64x48")
        # As an <img src> would, with ?token= (the SDK-style URL plus &token=).
        r = self.get("/view?" + params + self.q(self.token))
        self.expect("/view with &token=", f"{r.status_code} {png_size(r.content)}", "200 64x48")
        r = self.get("/view?" + params)
        self.expect("/view without a token", r.status_code, "401")

    def websocket_images(self):
        cid = uuid.uuid4().hex
        ws, got = self.ws(self.q(self.token), client_id=cid)
        if not ws:
            self.expect("SaveImageWebsocket binary frame", got, "101")
            return
        ws.recv()
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 24, "batch_size": 1, "color": 0xFF0000}},
                  "2": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}}}
        _, _, types, frames = self.run_prompt(ws, cid, prompt)
        ws.close()
        got = "no binary frame"
        if frames:
            event, fmt = struct.unpack(">II", frames[0][:8])
            got = f"event={event} format={fmt} {png_size(frames[0][8:])}"
        # event 1 is PREVIEW_IMAGE, format 2 is PNG (ComfyUI's server.py).
        self.expect("SaveImageWebsocket binary frame", got, "event=1 format=2 32x24")

    def upload_view(self):
        data = make_png(40, 30, random.Random(os.urandom(8)))
        name = f"realclients-{uuid.uuid4().hex[:8]}.png"
        r = self.post("/upload/image", headers=self.auth, files={"image": (name, io.BytesIO(data), "image/png")},
                      data={"type": "input", "overwrite": "true"})
        body = r.json() if r.status_code == 200 else {}
        self.expect("upload/image", f"{r.status_code} {body.get('name') == name} {body.get('type')}", "200 True input")
        r = self.get("/view?" + urllib.parse.urlencode({"filename": name, "type": "input"}), headers=self.auth)
        self.expect("upload then /view, byte for byte", f"{r.status_code} identical={r.content == data}", "200 identical=True")
        r = self.post("/api/upload/image", headers=self.auth, files={"image": (name, io.BytesIO(data), "image/png")},
                      data={"type": "input", "subfolder": "realclients", "overwrite": "true"})
        sub = r.json().get("subfolder") if r.status_code == 200 else None
        self.expect("upload/image under /api/ into a subfolder", f"{r.status_code} {sub}", "200 realclients")
        r = self.get("/api/view?" + urllib.parse.urlencode({"filename": name, "subfolder": "realclients", "type": "input"}),
                     headers=self.auth)
        self.expect("/api/view from the subfolder, byte for byte", f"{r.status_code} identical={r.content == data}",
                    "200 identical=True")

    def userdata(self):
        for prefix in ("", "/api"):
            d = f"realclients-{uuid.uuid4().hex[:6]}"
            a, b = f"{d}%2Fa.json", f"{d}%2Fb.json"
            body = json.dumps({"hello": "world", "n": random.randint(0, 1 << 30)}).encode()
            steps = []
            r = self.post(f"{prefix}/userdata/{a}", headers=self.auth, data=body)
            steps.append(f"save={r.status_code}:{r.text.strip()}")
            r = self.get(f"{prefix}/userdata/{a}", headers=self.auth)
            steps.append(f"get={r.status_code}:{r.content == body}")
            r = self.get(f"{prefix}/userdata?dir={d}", headers=self.auth)
            steps.append(f"list={r.status_code}:{r.json() if r.status_code == 200 else ''}")
            r = self.post(f"{prefix}/userdata/{a}/move/{b}", headers=self.auth)
            steps.append(f"move={r.status_code}:{r.text.strip()}")
            r = self.get(f"{prefix}/userdata/{a}", headers=self.auth)
            steps.append(f"old={r.status_code}")
            r = self.get(f"{prefix}/userdata/{b}", headers=self.auth)
            steps.append(f"new={r.status_code}:{r.content == body}")
            r = requests.delete(f"{self.base}{prefix}/userdata/{b}", headers=self.auth, timeout=30)
            steps.append(f"delete={r.status_code}")
            r = self.get(f"{prefix}/userdata/{b}", headers=self.auth)
            steps.append(f"gone={r.status_code}")
            want = (f'save=200:"{d}/a.json" get=200:True list=200:[\'a.json\'] move=200:"{d}/b.json" '
                    f"old=404 new=200:True delete=204 gone=404")
            self.expect(f"userdata with %2F{' under /api/' if prefix else ''}: save, get, list, move, delete",
                        " ".join(steps), want)

    def refusals(self):
        for method, path in (("GET", "/system_stats"), ("GET", "/api/system_stats"), ("POST", "/prompt"),
                             ("GET", "/view?filename=x.png&type=output"), ("POST", "/upload/image"),
                             ("GET", "/userdata?dir=x"), ("GET", "/history")):
            r = requests.request(method, self.base + path, timeout=30)
            err = r.json().get("error") if r.headers.get("Content-Type", "").startswith("application/json") else None
            self.expect(f"no token: {method} {path}", f"{r.status_code} {err}", "401 Authentication required.")
        r = self.get("/system_stats", headers={"Authorization": "Bearer not-the-token"})
        self.expect("wrong token", r.status_code, "401")
        r = self.get("/system_stats", headers={"Authorization": "Bearer"})
        self.expect("empty Bearer token", r.status_code, "401")
        _, got = self.ws()
        self.expect("websocket without a token", got, "401")
        _, got = self.ws(header=["Accept: text/html"])
        self.expect("websocket without a token, Accept: text/html", got, "401")
        r = self.get("/", headers={"Accept": "text/html"}, allow_redirects=False)
        self.expect("browser page load without a session", f"{r.status_code} {loc_path(r)}", "302 /login")

    def login_flow(self):
        s = requests.Session()
        r = s.get(self.base + "/login", timeout=30)
        self.expect("GET /login", f"{r.status_code} {'password' in r.text}", "200 True")
        r = s.post(self.base + "/login", data={"username": "someone", "password": "wrong"}, allow_redirects=False, timeout=30)
        self.expect("login with a wrong password", f"{r.status_code} {loc_path(r, query=True)}", "302 /login?wrong_password=1")
        r = s.post(self.base + "/login", data={"username": "someone", "password": self.raw}, allow_redirects=False, timeout=30)
        self.expect("login with the token as password", f"{r.status_code} {loc_path(r)} cookie={bool(s.cookies)}", "302 / cookie=True")
        old = dict(s.cookies)
        cookie_header = "; ".join(f"{k}={v}" for k, v in old.items())
        r = s.get(self.base + "/system_stats", timeout=30)
        self.expect("session cookie: /system_stats", r.status_code, "200")
        host = urllib.parse.urlsplit(self.base).netloc
        r = s.post(self.base + "/api/prompt", json={"prompt": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}},
            headers={"Origin": self.base}, timeout=30)
        self.expect("session cookie: POST /api/prompt with our Origin", r.status_code, "200")
        ws, got = self.ws(header=["Cookie: " + cookie_header], origin=self.base)
        self.expect("session websocket, our Origin", got, "101")
        if ws:
            ws.close()
        _, got = self.ws(header=["Cookie: " + cookie_header], origin="http://evil.example")
        self.expect("session websocket, foreign Origin", got, "403")
        r = s.get(self.base + "/logout", allow_redirects=False, timeout=30)
        self.expect("logout", f"{r.status_code} {loc_path(r)}", "302 /login")
        r = s.get(self.base + "/system_stats", timeout=30)
        self.expect("session after logout", r.status_code, "401")
        r = requests.get(self.base + "/system_stats", headers={"Cookie": cookie_header}, timeout=30)
        self.expect("old cookie replayed after logout", r.status_code, "401")
        del host

    def origin_check(self):
        # A browser page served by the gateway sends its own origin: ComfyUI's
        # loopback check compares it with Host and must let it through.
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                  "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        hdr = dict(self.auth, Origin=self.base)
        r = self.post("/prompt", headers=hdr, json={"prompt": prompt})
        self.expect("POST /prompt with a browser-like Origin", r.status_code, "200")
        ws, got = self.ws(self.q(self.token), origin=self.base)
        self.expect("websocket with a browser-like Origin", got, "101")
        if ws:
            ws.close()
        r = self.post("/prompt", headers=dict(self.auth, Origin="http://evil.example"), json={"prompt": prompt})
        self.expect("POST /prompt from a foreign Origin (ComfyUI's own check)", r.status_code, "403")

    def idle_websocket(self):
        cid = uuid.uuid4().hex
        ws, got = self.ws(self.q(self.token), client_id=cid)
        if not ws:
            self.expect(f"websocket idle {self.idle} s then a prompt", got, "101")
            return
        ws.recv()
        # The point of the check is the idle time itself.
        time.sleep(self.idle)
        prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
                  "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        try:
            _, _, types, _ = self.run_prompt(ws, cid, prompt)
            got = "execution_success" if "execution_success" in types else " ".join(types)
        except Exception as e:  # a closed socket is the failure this check looks for
            got = f"{type(e).__name__}: {e}"
        ws.close()
        self.expect(f"websocket idle {self.idle} s then a prompt", got, "execution_success")


def loc_path(r, query=False):
    loc = r.headers.get("Location", "")
    u = urllib.parse.urlsplit(loc)
    return u.path + ("?" + u.query if query and u.query else "")


def png_size(b):
    if len(b) < 24 or b[:8] != b"\x89PNG\r\n\x1a\n":
        return "not-a-png"
    w, h = struct.unpack(">II", b[16:24])
    return f"{w}x{h}"


def make_png(w, h, rnd):
    raw = b"".join(b"\x00" + bytes(rnd.getrandbits(8) for _ in range(w * 3)) for _ in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--target", required=True, choices=["gateway", "fake", "login"])
    p.add_argument("--raw", required=True)
    p.add_argument("--hash", required=True)
    p.add_argument("--idle", type=float, default=65)
    args = p.parse_args()
    s = Suite(args)
    failed_early = []

    def guarded(fn):
        def run():
            try:
                fn()
            except Exception as e:  # report, and let the other checks run
                report(fn.__name__, False, f"FAIL {fn.__name__}: {type(e).__name__}: {e}")
                failed_early.append(fn.__name__)
        return run

    idle = threading.Thread(target=guarded(s.idle_websocket))
    idle.start()
    for fn in (s.credentials, s.stats_and_object_info, s.prompt_and_view, s.websocket_images, s.upload_view,
               s.userdata, s.origin_check, s.login_flow, s.refusals):
        guarded(fn)()
    idle.join()
    failed = [name for name, ok, _ in results if not ok]
    print(f"suite {args.target}: {len(results) - len(failed)} passed, {len(failed)} failed"
          + (": " + "; ".join(failed) if failed else ""), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
