// @saintno/comfyui-sdk with a wrong token: its constructor and init() retry
// loop poll GET /prompt again and again. Against the gateway that trips the
// lockout for the client's address (the right token then gets 429 too, until
// it ends); ComfyUI-Login has no lockout.
//
// usage: node saintno-lockout.mjs BASE_URL RIGHT_TOKEN WRONG_TOKEN 429|none
import { ComfyApi } from "@saintno/comfyui-sdk";
import { base, token, check } from "./common.mjs";

const [wrong, expect] = process.argv.slice(4);
const api = new ComfyApi(base, "realclients-lockout-" + process.pid, {
  credentials: { type: "bearer_token", token: wrong },
});
const statuses = [];
api.on("auth_error", () => statuses.push(401));
api.init(8, 100); // its default is 10 tries, 1 s apart
const rightStatus = async () =>
  (await fetch(base + "/system_stats", { headers: { Authorization: "Bearer " + token } })).status;
// Poll until the lockout shows, or until the SDK's 8 tries are surely over.
const deadline = Date.now() + (expect === "429" ? 20_000 : 5_000);
let got = await rightStatus();
while (got !== 429 && Date.now() < deadline) {
  await new Promise((r) => setTimeout(r, 250));
  got = await rightStatus();
}
if (expect === "429") {
  check("the SDK's retries with a wrong token lock its address out", got === 429, `right token then got ${got}`);
} else {
  check("no lockout: the right token still works after the SDK's retries", got === 200, String(got));
}
api.destroy();
console.log(`saintno-lockout: right token answered ${got} after the SDK's retry loop`);
process.exit(0);
