// @saintno/comfyui-sdk as its README shows, with a Bearer token: the SDK puts
// it on every HTTP request and on its Node websocket's upgrade.
import { ComfyApi, PromptBuilder, CallWrapper } from "@saintno/comfyui-sdk";
import { base, token, check, trace, eventsSeen, workflow, pngSize, makePNG } from "./common.mjs";

const api = new ComfyApi(base, "realclients-saintno-" + process.pid, {
  credentials: { type: "bearer_token", token },
});
const events = eventsSeen((name, fn) => api.on(name, fn), ["status", "execution_start", "executing", "executed", "execution_success"]);
api.on("log", (e) => {
  const d = e.detail;
  if (d.fnName === "socket" || /reconnect|disconnect/i.test(d.message)) trace.push(`${Date.now() % 100000} ${d.fnName}: ${d.message}`);
});
for (const ev of ["disconnected", "reconnected", "executing", "execution_success"]) {
  api.on(ev, (e) => trace.push(`${Date.now() % 100000} event ${ev} ${JSON.stringify(e.detail ?? null).slice(0, 80)}`));
}
const connected = eventsSeen((name, fn) => api.on(name, fn), ["status"]);
await api.init(3, 500).waitForReady();
// waitForReady does not wait for the websocket; ComfyUI greets each new
// websocket with a status message. A prompt queued before that may run
// unseen, and the SDK then reports the run from /history.
check("init, then the websocket's first status", api.isReady && (await connected.all(30_000)).has("status"));
const stats = await api.getSystemStats();
check("getSystemStats", !!stats?.system?.comfyui_version, stats?.system?.comfyui_version);

const prefix = "saintno-" + process.pid;
const builder = new PromptBuilder(workflow(prefix), [], ["images"]).setOutputNode("images", "2");
const out = await new Promise((resolve, reject) => {
  new CallWrapper(api, builder)
    .onFinished((data) => resolve(data))
    .onFailed((err) => reject(err))
    .run();
});
const img = out?.images?.images?.[0];
check("CallWrapper output", !!img && img.filename.startsWith(prefix), JSON.stringify(img));
const seen = await events.all(30_000);
check("websocket events", ["status", "execution_start", "executing", "executed", "execution_success"].every((e) => seen.has(e)), [...seen].join(" "));

const blob = await api.getImage(img);
check("getImage (authenticated fetch)", pngSize(await blob.arrayBuffer()) === "64x48");
// getPathImage builds a URL for <img src>: it carries no credential.
const url = api.getPathImage(img);
const bare = await fetch(url);
check("getPathImage URL alone is refused", bare.status === 401, `${bare.status} ${url.replace(/\?.*/, "?…")}`);
const withToken = await fetch(url + "&token=" + encodeURIComponent(token));
check("getPathImage URL with &token=", withToken.status === 200 && pngSize(await withToken.arrayBuffer()) === "64x48", String(withToken.status));

const png = makePNG(20, 10);
const name = `saintno-${process.pid}.png`;
const up = await api.uploadImage(png, name, { override: true });
check("uploadImage", up && up.info.filename === name, JSON.stringify(up && up.info));
const back = await api.fetchApi(`/view?filename=${encodeURIComponent(name)}&type=input`);
check("upload then view, byte for byte", back.status === 200 && Buffer.from(await back.arrayBuffer()).equals(png), String(back.status));
api.destroy();
console.log("saintno: all steps passed");
process.exit(0);
