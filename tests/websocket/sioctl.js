// A socket.io-client 4.x puppet for the websocket tests: reads one JSON
// command per line on stdin, prints one JSON report per line on stdout.
//   {"op":"connect","id":"a","url":"http://127.0.0.1:P/ipc/svc","opts":{...}}
//   {"op":"emit","id":"a","event":"ipc:emit","args":[...],"ack":true,"tag":"t1"}
//   {"op":"answer_calls","id":"a","mode":"echo"|"fail"|"raw"|"none"}
//   {"op":"close","id":"a"}           {"op":"exit"}
// Reports: connect, connect_error, disconnect, upgrade, event (every event
// the server emits, via onAny), ack (an emit's callback), call (ipc:call seen).
"use strict";
const { io } = require("socket.io-client");
const readline = require("readline");

const sockets = new Map();
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

function connect(c) {
  const s = io(c.url, Object.assign({ reconnection: false, timeout: 10000 }, c.opts || {}));
  sockets.set(c.id, s);
  s.on("connect", () => out({ ev: "connect", id: c.id, sid: s.id, transport: s.io.engine.transport.name }));
  // The upgrade may finish before the namespace is joined: listen from the
  // moment the Engine.IO session opens.
  const onOpen = () => s.io.engine.once("upgrade", (t) => out({ ev: "upgrade", id: c.id, transport: t.name }));
  if (s.io.engine) onOpen(); else s.io.once("open", onOpen);
  s.on("connect_error", (e) => out({ ev: "connect_error", id: c.id, message: e.message, data: e.data || null }));
  s.on("disconnect", (reason) => out({ ev: "disconnect", id: c.id, reason }));
  s.onAny((event, ...args) => {
    if (event === "ipc:call") return;   // reported by answer_calls
    out({ ev: "event", id: c.id, event, args });
  });
  s.io.on("reconnect", (n) => out({ ev: "reconnect", id: c.id, attempts: n }));
}

function answerCalls(c) {
  const s = sockets.get(c.id);
  s.off("ipc:call");
  s.on("ipc:call", (req, cb) => {
    out({ ev: "call", id: c.id, req });
    if (c.mode === "none") return;
    if (c.mode === "fail") cb({ success: false, error: { code: "EXECUTION_FAILED", message: "refused: " + req.method } });
    else if (c.mode === "raw") cb({ echoed: req.params });
    else cb({ success: true, data: { echo: req.params, method: req.method, from: req.from } });
  });
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let c;
  try { c = JSON.parse(line); } catch (e) { out({ ev: "bad_command", line }); return; }
  const s = sockets.get(c.id);
  switch (c.op) {
    case "connect": connect(c); break;
    case "emit":
      if (c.ack) s.emit(c.event, ...(c.args || []), (...r) => out({ ev: "ack", id: c.id, tag: c.tag, args: r }));
      else s.emit(c.event, ...(c.args || []));
      break;
    case "emit_binary": s.emit("ipc:emit", { event: "b:bin", payload: Buffer.from([1, 2, 3, 4]) }); break;
    case "answer_calls": answerCalls(c); out({ ev: "answering", id: c.id, mode: c.mode }); break;
    case "close": s.close(); break;
    case "exit": for (const x of sockets.values()) x.close(); setTimeout(() => process.exit(0), 50); break;
    default: out({ ev: "bad_command", line });
  }
});
rl.on("close", () => { for (const x of sockets.values()) x.close(); setTimeout(() => process.exit(0), 50); });
out({ ev: "ready" });
