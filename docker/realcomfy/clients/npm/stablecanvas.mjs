// @stable-canvas/comfyui-client in Node with its LoginAuthPlugin, which puts
// ?token= on every API and websocket URL.
import { Client, plugins, outToB64Urls } from "@stable-canvas/comfyui-client";
import WebSocket from "ws";
import { base, token, check, eventsSeen, workflow, pngSize, makePNG } from "./common.mjs";

const u = new URL(base);
const client = new Client({ api_host: u.host, clientId: "realclients-stablecanvas-" + process.pid, WebSocket, fetch });
client.use(new plugins.LoginAuthPlugin({ token }));
const events = eventsSeen((name, fn) => client.on(name, fn), ["status", "execution_start", "executing", "executed", "execution_success"]);
check("connect (websocket with ?token=)", (await client.connect({ timeout_ms: 30_000 })) !== false);
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
// outToB64Urls fetches those URLs with a plain fetch: without a token it does
// not fail, it base64s the gateway's 401 body as if it were the image.
const bareB64 = await outToB64Urls(result);
const bareBody = Buffer.from(bareB64[0].split(",")[1], "base64");
check("outToB64Urls without a token yields the 401 body, not an image", pngSize(bareBody) === "not-a-png" &&
  bareBody.toString().includes("Authentication required"), bareBody.toString().slice(0, 60));
// With a fetch that adds &token=, it yields the image (labelled by the URL's
// suffix, so "image/jpeg" for ?...&type=output, whatever the bytes).
const viaHelper = await outToB64Urls(result, {
  fetch: (url, init) => fetch(url + "&token=" + encodeURIComponent(token), init),
});
const img = Buffer.from(viaHelper[0].split(",")[1], "base64");
check("outToB64Urls with a fetch that adds &token=", viaHelper[0].startsWith("data:image/") && pngSize(img) === "64x48", pngSize(img));

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
