#!/usr/bin/env python3
"""Named users against real ComfyUI 0.3.64 started with --multi-user, behind
the gateway started with --comfy-multi-user --max-queued-prompts 1. Debian's
python3-requests and python3-websocket only; docker/realcomfy/multiuser
starts everything.

usage: multiuser.py --base URL --tokens DIR --user-dir DIR --release HOST_PATH
                    --release-in-comfy PATH --cli BIN --hash-file FILE
                    --gateway-log FILE --gateway-pid FILE --reload SECONDS
                    -- GATEWAY COMMAND...

It starts the gateway itself (GATEWAY COMMAND, output appended to
--gateway-log, its pid in --gateway-pid), so that it can restart it.

Checks, each printed as PASS or FAIL:
  - alice and bob (made with `token generate --user`) get in with their
    `name:secret` tokens: Bearer, Basic and ?token=;
  - the same /userdata path saved by alice and by bob lands in two different
    user directories of ComfyUI (read on disk, through user/users.json), and
    a Comfy-User header a client sends cannot write into another user's;
  - the queue share: while alice's prompt is running (a HoldUntilFile node
    that waits for a file the test creates), her next POST /prompt and
    /api/prompt get 429 with code queue_share, and bob still queues; once
    the hold is released, alice queues again; a gateway restart while her
    prompt is queued does not reset her count (the gateway's --state-dir
    keeps the key of its tags);
  - `token revoke --user bob` shuts bob's token and his login session out
    within the reload time, and alice stays in;
  - the gateway's access log names the users and holds no secret.

Exits 1 if any check failed.
"""
import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid

import requests
import websocket

results = []


def check(name, ok, detail=""):
    results.append((name, ok))
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""), flush=True)
    return ok


def wait_until(what, cond, seconds, every=0.2):
    """Polls cond() until it returns a true value or seconds pass; returns
    (value, elapsed seconds)."""
    t0 = time.monotonic()
    while True:
        v = cond()
        if v:
            return v, time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            return None, time.monotonic() - t0
        time.sleep(every)


class Client:
    def __init__(self, base, name, token):
        self.base, self.name, self.token = base, name, token
        self.auth = {"Authorization": "Bearer " + token}

    def get(self, path, **kw):
        kw.setdefault("timeout", 30)
        kw.setdefault("headers", self.auth)
        return requests.get(self.base + path, **kw)

    def post(self, path, **kw):
        kw.setdefault("timeout", 30)
        h = dict(self.auth)
        h.update(kw.pop("headers", {}))
        return requests.post(self.base + path, headers=h, **kw)


def refusal_code(r):
    try:
        return r.json().get("code")
    except ValueError:
        return None


def quick_prompt(tag):
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "multiuser-" + tag}}}


class Gateway:
    """The gateway process, started and restarted by the test."""

    def __init__(self, cmd, log, pidfile, base):
        self.cmd, self.log, self.pidfile, self.base, self.p = cmd, log, pidfile, base, None

    def start(self):
        with open(self.log, "a") as out:
            self.p = subprocess.Popen(self.cmd, stdout=out, stderr=out, start_new_session=True)
        with open(self.pidfile, "w") as f:
            f.write(str(self.p.pid))

        def up():
            if self.p.poll() is not None:
                return "exited"
            try:
                return requests.get(self.base + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        ok, took = wait_until("the gateway answers", up, 30)
        return ok is True, took

    def stop(self):
        if self.p and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()


def main():
    p = argparse.ArgumentParser()
    for a in ("--base", "--tokens", "--user-dir", "--release", "--release-in-comfy", "--cli", "--hash-file",
              "--gateway-log", "--gateway-pid"):
        p.add_argument(a, required=True)
    p.add_argument("--reload", type=float, required=True)
    p.add_argument("gateway", nargs="+")
    args = p.parse_args()
    base = args.base.rstrip("/")
    gw = Gateway(args.gateway, args.gateway_log, args.gateway_pid, base)
    try:
        ok, took = gw.start()
        if not check("the gateway starts with --comfy-multi-user --max-queued-prompts 1", ok, f"after {took:.1f} s"):
            with open(args.gateway_log) as f:
                print(f.read()[-2000:])
            sys.exit(1)
        run(args, base, gw)
    finally:
        gw.stop()
    failed = [n for n, ok in results if not ok]
    print(f"multiuser: {len(results) - len(failed)} passed, {len(failed)} failed" + (": " + "; ".join(failed) if failed else ""),
          flush=True)
    sys.exit(1 if failed else 0)


def run(args, base, gw):

    tok = {}
    for n in ("alice", "bob"):
        with open(os.path.join(args.tokens, n + ".token")) as f:
            tok[n] = f.read().strip()
    alice, bob = Client(base, "alice", tok["alice"]), Client(base, "bob", tok["bob"])

    # --- credentials ------------------------------------------------------
    for c in (alice, bob):
        r = c.get("/system_stats")
        check(f"{c.name}: Bearer {c.name}:<secret>", r.status_code == 200, r.status_code)
    basic = base64.b64encode(tok["bob"].encode()).decode()
    r = requests.get(base + "/system_stats", headers={"Authorization": "Basic " + basic}, timeout=30)
    check("bob: Basic base64(bob:<secret>)", r.status_code == 200, r.status_code)
    r = requests.get(base + "/system_stats?token=" + urllib.parse.quote(tok["alice"], safe=""), timeout=30)
    check("alice: ?token=alice%3A<secret>", r.status_code == 200, r.status_code)
    r = requests.get(base + "/system_stats", headers={"Authorization": "Bearer alice:" + tok["bob"].split(":", 1)[1]}, timeout=30)
    check("alice's name with bob's secret is refused", r.status_code == 401, r.status_code)

    # --- /userdata lands in each user's own directory ----------------------
    body = {n: json.dumps({"owner": n, "n": uuid.uuid4().hex}).encode() for n in ("alice", "bob")}
    for c in (alice, bob):
        r = c.post("/userdata/workflows%2Fclass.json?overwrite=true", data=body[c.name])
        check(f"{c.name}: POST /userdata/workflows%2Fclass.json", r.status_code == 200, f"{r.status_code} {r.text[:120]}")
    for c in (alice, bob):
        r = c.get("/userdata/workflows%2Fclass.json")
        check(f"{c.name}: reads back their own class.json", r.status_code == 200 and r.content == body[c.name],
              f"{r.status_code} own={r.content == body[c.name]}")
    # A client-sent Comfy-User naming bob's registry id must not reach it.
    users_file = os.path.join(args.user_dir, "users.json")
    try:
        with open(users_file) as f:
            registry = json.load(f)  # ComfyUI's user id -> user name
    except (OSError, ValueError) as e:
        registry = {}
        check(f"ComfyUI's user registry {users_file}", False, e)
    ids = {n: [i for i, v in registry.items() if v == n] for n in ("alice", "bob")}
    check("ComfyUI's registry has one id for alice and one for bob", len(ids["alice"]) == 1 and len(ids["bob"]) == 1,
          f"registry {registry}")
    bob_id = ids["bob"][0] if ids["bob"] else "bob"
    spoof = json.dumps({"spoofed": True}).encode()
    r = alice.post("/userdata/workflows%2Fspoof.json?overwrite=true", data=spoof, headers={"Comfy-User": bob_id})
    check("alice with a forged Comfy-User: bob's id: saved", r.status_code == 200, r.status_code)
    if ids["alice"] and ids["bob"]:
        a_dir = os.path.join(args.user_dir, ids["alice"][0])
        b_dir = os.path.join(args.user_dir, ids["bob"][0])

        def read(path):
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError:
                return None
        check("on disk: alice's class.json is in alice's user directory",
              read(os.path.join(a_dir, "workflows", "class.json")) == body["alice"], a_dir)
        check("on disk: bob's class.json is in bob's user directory",
              read(os.path.join(b_dir, "workflows", "class.json")) == body["bob"], b_dir)
        check("on disk: the forged Comfy-User wrote into alice's directory, not bob's",
              read(os.path.join(a_dir, "workflows", "spoof.json")) == spoof
              and read(os.path.join(b_dir, "workflows", "spoof.json")) is None)
    r = alice.get("/users")
    listed = r.text if r.status_code == 200 else ""
    check("GET /users as alice does not show bob", r.status_code == 200 and "bob" not in listed,
          f"{r.status_code} {listed[:200]}")

    # --- queue share ----------------------------------------------------------
    if os.path.exists(args.release):
        os.remove(args.release)
    hold = {"1": {"class_type": "HoldUntilFile", "inputs": {"path": args.release_in_comfy}}}
    r = alice.post("/prompt", json={"prompt": hold, "client_id": uuid.uuid4().hex})
    held = r.json().get("prompt_id") if r.status_code == 200 else None
    check("alice: a prompt that holds the queue (HoldUntilFile)", held is not None, f"{r.status_code} {r.text[:200]}")

    def running():
        q = alice.get("/queue")
        return q.status_code == 200 and any(held in item for item in q.json().get("queue_running", []))
    _, took = wait_until("the held prompt runs", running, 120)
    check("the held prompt is running", running(), f"after {took:.1f} s")
    for path in ("/prompt", "/api/prompt"):
        r = alice.post(path, json={"prompt": quick_prompt("alice-2")})
        check(f"alice's second prompt on {path}: 429 queue_share",
              r.status_code == 429 and refusal_code(r) == "queue_share", f"{r.status_code} {r.text[:200]}")
    r = bob.post("/prompt", json={"prompt": quick_prompt("bob-1")})
    bob_pid = r.json().get("prompt_id") if r.status_code == 200 else None
    check("bob queues while alice is at her share", bob_pid is not None, f"{r.status_code} {r.text[:200]}")
    r = bob.post("/prompt", json={"prompt": quick_prompt("bob-2")})
    check("bob's second prompt while his first is pending: 429 queue_share",
          r.status_code == 429 and refusal_code(r) == "queue_share", f"{r.status_code} {r.text[:200]}")
    gw.stop()
    ok, took = gw.start()
    check("the gateway restarts while alice's prompt runs", ok and running(), f"after {took:.1f} s")
    r = alice.post("/prompt", json={"prompt": quick_prompt("alice-after-restart")})
    check("after the restart, alice's next prompt: still 429 queue_share",
          r.status_code == 429 and refusal_code(r) == "queue_share", f"{r.status_code} {r.text[:200]}")
    open(args.release, "w").close()

    # Each user sees only their own prompts' history (own prompts), so each
    # waits on their own.
    def done(owner, pid):
        def f():
            h = owner.get(f"/history/{pid}")
            return h.status_code == 200 and h.json().get(pid, {}).get("status", {}).get("completed")
        return f
    for who, owner, pid in (("alice's held", alice, held), ("bob's", bob, bob_pid)):
        if pid:
            ok, took = wait_until(f"{who} prompt completes", done(owner, pid), 120)
            check(f"{who} prompt completes once released", bool(ok), f"after {took:.1f} s")
    if bob_pid:
        r = alice.get(f"/history/{bob_pid}")
        check("alice does not see bob's finished prompt in /history", r.status_code == 200 and r.json() == {},
              f"{r.status_code} {r.text[:200]}")
        # Own outputs: /view serves bob's image to bob and the operator's
        # ComfyUI, not to alice, however she spells the query.
        h = bob.get(f"/history/{bob_pid}")
        images = [img for out in (h.json().get(bob_pid, {}).get("outputs", {}) if h.status_code == 200 else {}).values()
                  for img in out.get("images", [])]
        img = images[0] if images else {}
        check("bob's prompt lists its image in his /history", bool(img.get("filename")), f"{h.status_code} {h.text[:200]}")
        if img.get("filename"):
            q = {"filename": img["filename"], "subfolder": img.get("subfolder", ""), "type": img.get("type", "output")}
            r = bob.get("/view", params=q)
            check("bob views his own output through /view", r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n",
                  f"{r.status_code} {r.headers.get('Content-Type')}")
            for how, params in (("as bob's query", q),
                                ("as `name [output]` under type=input",
                                 {"filename": img["filename"] + " [output]", "type": "input", "subfolder": q["subfolder"]}),
                                ("through a subfolder `..`", {"filename": img["filename"], "subfolder": "x/../" + q["subfolder"]})):
                r = alice.get("/view", params=params)
                check(f"alice cannot /view bob's output {how}: 404 not_your_output",
                      r.status_code == 404 and refusal_code(r) == "not_your_output", f"{r.status_code} {r.text[:200]}")
            # Other spellings of the path: the gateway checks what ComfyUI's
            # router would serve as /view; the rest ComfyUI does not serve.
            qs = urllib.parse.urlencode(q)
            served, seen = [], []
            for p in ("/api/view", "/api/vi%65w", "//view", "/view/", "/./view", "/api//view", "/x/../view", "/%2Fview", "/View"):
                # http.client sends the path as written (requests would
                # remove its dot segments).
                u = urllib.parse.urlsplit(alice.base)
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                conn.request("GET", p + "?" + qs, headers=alice.auth)
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                code = ""
                if resp.getheader("Content-Type", "").startswith("application/json"):
                    try:
                        code = json.loads(body).get("code") or ""
                    except ValueError:
                        pass
                seen.append(f"{p} {resp.status} {code}".strip())
                if resp.status == 200 or body[:8] == b"\x89PNG\r\n\x1a\n":
                    served.append(p)
            # The Load Image (from Outputs) node reads "name [output]":
            # alice's prompt naming bob's file is refused, bob's queues.
            name = (q["subfolder"] + "/" if q["subfolder"] else "") + q["filename"] + " [output]"
            load = {"1": {"class_type": "LoadImageOutput", "inputs": {"image": name}},
                    "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
            r = alice.post("/prompt", json={"prompt": load})
            check("alice's prompt loading bob's output (LoadImageOutput): 403 not_your_file",
                  r.status_code == 403 and refusal_code(r) == "not_your_file", f"{r.status_code} {r.text[:200]}")
            r = bob.post("/prompt", json={"prompt": load})
            check("bob's prompt loading his own output (LoadImageOutput) is queued", r.status_code == 200,
                  f"{r.status_code} {r.text[:200]}")
            check("alice cannot /view bob's output through another spelling of the path", not served,
                  (f"served: {served}; " if served else "") + ", ".join(seen))

    def share_free():
        r = alice.post("/prompt", json={"prompt": quick_prompt("alice-3")})
        return r if r.status_code == 200 else None
    r, took = wait_until("alice's share is free", share_free, 30, every=0.5)
    check("alice queues again once her prompt is done", r is not None, f"after {took:.1f} s")

    # --- revocation ------------------------------------------------------------
    s = requests.Session()
    r = s.post(base + "/login", data={"username": "bob", "password": tok["bob"].split(":", 1)[1]},
               allow_redirects=False, timeout=30)
    check("bob logs in with the login form (username bob)", r.status_code in (302, 303) and bool(s.cookies),
          f"{r.status_code} cookie={bool(s.cookies)}")
    r = s.get(base + "/system_stats", timeout=30)
    check("bob's session works before the revocation", r.status_code == 200, r.status_code)
    ws_url = "ws" + base[len("http"):] + f"/ws?clientId={uuid.uuid4().hex}&token=" + urllib.parse.quote(tok["bob"], safe="")
    try:
        bob_ws = websocket.create_connection(ws_url, timeout=30)
        bob_ws.recv()  # ComfyUI's first status message
    except Exception as e:  # reported below; the revocation checks go on
        bob_ws = None
        check("bob's websocket opens before the revocation", False, f"{type(e).__name__}: {e}")
    out = subprocess.run([args.cli, "token", "revoke", "--user", "bob", "--hash-file", args.hash_file,
                          "--tokens-dir", args.tokens], capture_output=True, text=True)
    t_revoked = time.monotonic()
    check("token revoke --user bob", out.returncode == 0, (out.stdout + out.stderr).strip()[:300])

    def bob_out():
        a = bob.get("/system_stats").status_code
        b = s.get(base + "/system_stats", timeout=30).status_code
        return a == 401 and b == 401
    ok, _ = wait_until("bob is out", bob_out, args.reload + 10, every=0.05)
    took = time.monotonic() - t_revoked
    check(f"bob's token and session are refused within the reload time ({args.reload:g} s)",
          bool(ok) and took <= args.reload + 1, f"after {took:.2f} s")
    r = alice.get("/system_stats")
    check("alice is still in after bob's revocation", r.status_code == 200, r.status_code)
    # The README's bound: the reload that refuses bob's token also closes
    # the websocket his token opened before the revocation.
    if bob_ws is not None:
        closed, state = False, "still open (nothing within 5 s)"
        deadline = time.monotonic() + 5
        try:
            bob_ws.settimeout(5)
            bob_ws.ping("after-revoke")
            while time.monotonic() < deadline:
                op, _ = bob_ws.recv_data_frame(True)
                if op == websocket.ABNF.OPCODE_CLOSE:
                    closed, state = True, "closed (close frame)"
                    break
                state = f"still open (answered opcode {op})"
        except (websocket.WebSocketTimeoutException, TimeoutError):
            pass
        except Exception as e:
            closed, state = True, f"closed ({type(e).__name__})"
        check("bob's websocket opened before the revocation is closed by the reload", closed, state)
        bob_ws.close()
    check("bob's token file was deleted", not os.path.exists(os.path.join(args.tokens, "bob.token")))

    # --- the access log ------------------------------------------------------------
    try:
        with open(args.gateway_log) as f:
            log = f.read()
    except OSError as e:
        log = ""
        check("gateway log readable", False, e)
    users = set()
    for line in log.splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("message") == "request" and ev.get("user"):
            users.add(ev["user"])
    check('the access log names alice and bob in "user"', {"alice", "bob"} <= users, f"users seen: {sorted(users)}")
    secrets = [t.split(":", 1)[1] for t in tok.values()]
    check("the gateway log holds no token", not any(x in log for x in secrets))


if __name__ == "__main__":
    main()
