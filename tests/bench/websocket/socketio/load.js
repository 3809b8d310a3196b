// The same socket.io-client 4.x load for both servers (lexbus's bridge and
// relay.js).  One process publishes, one subscribes (forked), each with
// its own connection over WebSocket.
//   node load.js URL events N SIZE     ipc:emit to the subscriber, events/s at the subscriber
//   node load.js URL ack N             sequential ipc:emit with a callback: the round trip
// Prints one JSON line.
"use strict";
const { io } = require("socket.io-client");
const { fork } = require("child_process");
const [url, mode, nArg, sizeArg] = process.argv.slice(2);
const N = Number(nArg), SIZE = Number(sizeArg || 16);
const WINDOW = 20000;
const opts = { transports: ["websocket"], reconnection: false, forceNew: true };
const TAG = process.env.LOAD_TAG || "";   // several loads at once use distinct services

function connect(name) {
  return new Promise((resolve, reject) => {
    const s = io(url + "/ipc/" + name + TAG, opts);
    s.once("connect", () => resolve(s));
    s.once("connect_error", reject);
  });
}

async function subscriber() {
  const s = await connect("bench-sub");
  let next = 0, errors = 0, t0 = 0, reported = 0;
  s.on("bench:x", (payload) => {
    if (!t0) t0 = process.hrtime.bigint();
    const seq = Number(payload.slice(0, 10));
    if (seq !== next) errors++;
    next = seq + 1;
    if (next - reported >= WINDOW / 4 || next === N) { process.send({ got: next }); reported = next; }
    if (next === N) {
      const dt = Number(process.hrtime.bigint() - t0) / 1e9;
      process.send({ done: true, seconds: dt, errors });
    }
  });
  process.send({ ready: true });
}

async function publisher() {
  const child = fork(__filename, process.argv.slice(2), { env: Object.assign({}, process.env, { LOAD_ROLE: "sub" }) });
  let acked = 0, result = null, wake = null;
  child.on("message", (m) => {
    if (m.got) acked = m.got;
    if (m.done) result = m;
    if (wake) { const w = wake; wake = null; w(); }
  });
  await new Promise((r) => (wake = r));   // the subscriber is connected
  const s = await connect("bench-pub");
  const pad = "x".repeat(Math.max(0, SIZE - 10));
  for (let i = 0; i < N; i++) {
    while (i - acked >= WINDOW) await new Promise((r) => (wake = r));
    s.emit("ipc:emit", { event: "bench:x", target: "bench-sub" + TAG, payload: String(i).padStart(10, "0") + pad });
    if (i % 500 === 499) await new Promise((r) => setImmediate(r));   // let the socket write
  }
  while (!result) await new Promise((r) => (wake = r));
  console.log(JSON.stringify({ workload: "sio-events", messages: N, size: SIZE, seconds: result.seconds,
                               events_per_s: Math.round(N / result.seconds), order_errors: result.errors }));
  child.kill();
  s.close();
  process.exit(0);
}

async function ack() {
  const sub = await connect("bench-sub");
  const s = await connect("bench-pub");
  const lat = [];
  const warm = Math.floor(N / 10);
  for (let i = 0; i < N + warm; i++) {
    const t = process.hrtime.bigint();
    await new Promise((resolve) => s.emit("ipc:emit", { event: "bench:x", target: "bench-sub" + TAG, payload: "0123456789abcdef" },
                                            (r) => { if (!r || !r.success) throw new Error("failed: " + JSON.stringify(r)); resolve(); }));
    if (i >= warm) lat.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  lat.sort((a, b) => a - b);
  const p = (q) => lat[Math.min(lat.length - 1, Math.floor(lat.length * q))].toFixed(1);
  console.log(JSON.stringify({ workload: "sio-ack", messages: N, p50_us: Number(p(0.5)), p90_us: Number(p(0.9)),
                               p99_us: Number(p(0.99)) }));
  sub.close();
  s.close();
  process.exit(0);
}

if (process.env.LOAD_ROLE === "sub") subscriber();
else if (mode === "events") publisher();
else if (mode === "ack") ack();
else { console.error("usage: node load.js URL events N SIZE | ack N"); process.exit(2); }
