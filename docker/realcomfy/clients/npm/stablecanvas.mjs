// @stable-canvas/comfyui-client in Node with its LoginAuthPlugin, which puts
// ?token= on every API and websocket URL.
import { Client, plugins, outToB64Urls } from "@stable-canvas/comfyui-client";
import WebSocket from "ws";
import { base, token, check, eventsSeen, workflow, pngSize, makePNG } from "./common.mjs";

const u = new URL(base);
const client = new Client({ api_host: u.host, clientId: "realclients-stablecanvas-" + process.pid, WebSocket, fetch });
client.use(new plugins.LoginAuthPlugin({ token }));
const events = eventsSeen((name, fn) => client.on(name, fn), ["status", "execution_start", "executing", "executed", "execution_success"]);
client.connect();
const stats = await client.getSystemStats();
check("getSystemStats", !!stats?.system?.comfyui_version, stats?.system?.comfyui_version);

const prefix = "stablecanvas-" + process.pid;
const result = await client.enqueue(workflow(prefix), {});
check("enqueue", result.images.length === 1 && result.images[0].type === "url", JSON.stringify(result.images));
const seen = await events.all(30_000);
check("websocket events", ["status", "execution_start", "executing", "executed", "execution_success"].every((e) => seen.has(e)), [...seen].join(" "));

// The resolver's image URLs come from viewURL, which the plugin does not
// touch: they carry no token.
const url = result.images[0].data;
check("output URL has the prefix", url.includes(prefix), url.replace(/\?.*/, "?…"));
const bare = await fetch(url);
check("output URL alone is refused", bare.status === 401, String(bare.status));
let b64err = null;
try {
  await outToB64Urls(result);
} catch (e) {
  b64err = e;
}
const viaHelper = await outToB64Urls(result, {
  fetch: (url, init) => fetch(url + "&token=" + encodeURIComponent(token), init),
}).catch((e) => e);
check("outToB64Urls with a fetch that adds &token=", Array.isArray(viaHelper) && viaHelper[0].startsWith("data:image/png;base64,"),
  Array.isArray(viaHelper) ? viaHelper[0].slice(0, 30) : String(viaHelper));
const img = Buffer.from(viaHelper[0].split(",")[1], "base64");
check("output image", pngSize(img) === "64x48", pngSize(img));
console.log(`outToB64Urls without a token: ${b64err ? "throws " + b64err.message : "returns (check the data)"}`);

// No upload helper in this SDK: its fetchApi, as its README suggests for other routes.
const png = makePNG(20, 10);
const name = `stablecanvas-${process.pid}.png`;
const form = new FormData();
form.append("image", new Blob([png], { type: "image/png" }), name);
form.append("overwrite", "true");
const up = await client.fetchApi("/upload/image", { method: "POST", body: form });
const upBody = await up.json().catch(() => ({}));
check("upload/image via fetchApi", up.status === 200 && upBody.name === name, `${up.status} ${JSON.stringify(upBody)}`);
const back = await client.fetchApi(`/view?filename=${encodeURIComponent(name)}&type=input`);
check("upload then view, byte for byte", back.status === 200 && Buffer.from(await back.arrayBuffer()).equals(png), String(back.status));
client.close();
console.log("stablecanvas: all steps passed");
process.exit(0);
