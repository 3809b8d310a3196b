// The comparison server: the real Socket.IO 4.x server (npm socket.io,
// pinned in package-lock.json) doing what the lexbus bridge does for the
// load in load.js, and nothing more: a socket in /ipc/<name> is service
// <name>; ipc:emit {event, payload, target} goes to one socket of the
// target's namespace as (payload, meta), the sender gets ipc:ack and its
// callback gets {success: true, delivered}.
//   node relay.js PORT
"use strict";
const { Server } = require("socket.io");
const port = Number(process.argv[2]);
const io = new Server(port, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });
let seq = 0;
const nsps = io.of(/^\/ipc\/[A-Za-z0-9_.@-]+$/);
nsps.on("connection", (socket) => {
  const me = socket.nsp.name.slice(5);
  socket.on("ipc:emit", (msg, cb) => {
    const target = (msg && msg.target) || "broadcast";
    let delivered = 0;
    const meta = { source: me, target, id: "node-" + ++seq };
    if (target === "broadcast") {
      for (const [, nsp] of io._nsps) if (nsp.name.startsWith("/ipc/")) { nsp.emit(msg.event, msg.payload, meta); delivered += nsp.sockets.size; }
    } else {
      const nsp = io._nsps.get("/ipc/" + target);
      const one = nsp && nsp.sockets.values().next().value;   // one instance, as lexbus does
      if (one) { one.emit(msg.event, msg.payload, meta); delivered = 1; }
    }
    if (!delivered && target !== "broadcast") {
      socket.emit("ipc:error", { error: "SERVICE_NOT_FOUND", message: "no service named '" + target + "'" });
      if (typeof cb === "function") cb({ success: false, error: "no service", code: "SERVICE_NOT_FOUND" });
      return;
    }
    socket.emit("ipc:ack", { event: msg.event, target });
    if (typeof cb === "function") cb({ success: true, delivered });
  });
});
console.log("ready");
