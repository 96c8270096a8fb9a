// Shared by the SDK scripts: a model-free workflow, a PNG to upload, checks.
import { deflateSync } from "node:zlib";
import { randomBytes } from "node:crypto";
import { writeSync } from "node:fs";

export const [base, token] = process.argv.slice(2);
if (!base || !token) {
  console.error("usage: node SCRIPT BASE_URL TOKEN");
  process.exit(2);
}

// trace: what an SDK logged about its connection, printed on failure.
export const trace = [];

// check prints synchronously: console.log to a pipe is asynchronous in Node,
// and process.exit would drop what is still queued.
export function check(name, ok, detail = "") {
  writeSync(1, `${ok ? "ok" : "FAIL"} ${name}${detail ? ": " + detail : ""}\n`);
  if (!ok) {
    for (const line of trace.slice(-20)) writeSync(1, `  trace: ${line}\n`);
    process.exit(1);
  }
}

// An SDK error fails the run with its message (minified stack traces are
// one enormous line).
process.on("unhandledRejection", (e) => check("no SDK error", false, `${e?.name}: ${e?.message}`));
process.on("uncaughtException", (e) => check("no SDK error", false, `${e?.name}: ${e?.message}`));

// A whole run is bounded, so a hung websocket fails instead of blocking CI.
setTimeout(() => check("finished within 150 s", false), 150_000).unref();

// eventsSeen(on, names, ms): subscribes with on(name, fn) to each event now,
// and returns {seen, all(ms)}: all() resolves once every name has arrived
// (an SDK may resolve its run on "executed", before "execution_success"),
// or after ms with what arrived so far.
export function eventsSeen(on, names) {
  const seen = new Set();
  let wake = () => {};
  for (const name of names) {
    on(name, () => {
      seen.add(name);
      wake();
    });
  }
  const all = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve(seen), ms);
      wake = () => {
        if (names.every((n) => seen.has(n))) {
          clearTimeout(t);
          resolve(seen);
        }
      };
      wake();
    });
  return { seen, all };
}

export function workflow(prefix) {
  return {
    "1": { class_type: "EmptyImage", inputs: { width: 64, height: 48, batch_size: 1, color: 0x00ff00 } },
    "2": { class_type: "SaveImage", inputs: { images: ["1", 0], filename_prefix: prefix } },
  };
}

export function pngSize(buf) {
  const b = Buffer.from(buf);
  if (b.length < 24 || b.subarray(0, 8).toString("hex") !== "89504e470d0a1a0a") return "not-a-png";
  return `${b.readUInt32BE(16)}x${b.readUInt32BE(20)}`;
}

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (const byte of buf) {
    c = (crc ^ byte) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

// makePNG: a valid RGB PNG of random pixels, so an upload round trip that
// changed a byte would show.
export function makePNG(w, h) {
  const rows = [];
  for (let y = 0; y < h; y++) rows.push(Buffer.from([0]), randomBytes(w * 3));
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from("89504e470d0a1a0a", "hex"),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
