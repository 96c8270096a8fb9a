// @saintno/comfyui-sdk with a wrong token: its constructor and init() retry
// loop poll GET /prompt again and again. Against the gateway that trips the
// lockout for the client's address: a token never verified (another wrong
// one, or a right one not yet checked) then gets 429 until the lock ends,
// while a token the gateway already verified and cached still gets 200, as
// it costs no bcrypt. ComfyUI-Login has no lockout.
//
// usage: node saintno-lockout.mjs BASE_URL RIGHT_TOKEN WRONG_TOKEN 429|none
import { ComfyApi } from "@saintno/comfyui-sdk";
import { base, token, check } from "./common.mjs";

const [wrong, expect] = process.argv.slice(4);
const status = async (t) =>
  (await fetch(base + "/system_stats", { headers: { Authorization: "Bearer " + t } })).status;
// The right token, verified once before the SDK starts: cached from now on.
const rightBefore = await status(token);
const api = new ComfyApi(base, "realclients-lockout-" + process.pid, {
  credentials: { type: "bearer_token", token: wrong },
});
const statuses = [];
api.on("auth_error", () => statuses.push(401));
api.init(8, 100); // its default is 10 tries, 1 s apart
// Wait until the SDK's tries are surely over (8 tries, 100 ms apart, each
// answered at once or after one bcrypt check), then probe once with a token
// the gateway never verified: only a locked address answers it 429 without
// checking it.
await new Promise((r) => setTimeout(r, expect === "429" ? 8_000 : 3_000));
const fresh = await status(wrong + "-never-verified");
const rightAfter = await status(token);
if (expect === "429") {
  check("the SDK's retries with a wrong token lock its address out", fresh === 429, `a token never verified then got ${fresh}`);
  check("a token verified before the lock still gets in", rightBefore === 200 && rightAfter === 200, `right token ${rightBefore} before, ${rightAfter} after`);
} else {
  check("no lockout: the right token still works after the SDK's retries", rightAfter === 200, String(rightAfter));
}
api.destroy();
console.log(`saintno-lockout: after the SDK's retry loop a new token got ${fresh}, the verified one ${rightAfter}`);
process.exit(0);
