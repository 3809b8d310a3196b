// Drives real Bro IPC clients (the vendored ipc-bro, MessagePack by default)
// against lexbusd.  Prints one "ok NAME" line per step; exits 1 at the
// first failure.   node scenario.js SOCKET [msgpack|json]
"use strict";
const path = require("path");
const { IPCClient } = require(path.join(__dirname, "ipc-client.js"));
const sock = process.argv[2];
const base = { gatewayPath: sock, heartbeatInterval: 300, reconnectDelay: 200, timeout: 5000,
               serializer: process.argv[3] || undefined /* the client's default: msgpack */ };

function fail(what, got) {
  console.log("FAIL " + what + ": " + JSON.stringify(got));
  process.exit(1);
}
function check(cond, what, got) { if (!cond) fail(what, got); console.log("ok " + what); }
async function rejects(p) { try { return { value: await p }; } catch (e) { return { code: e.code, message: e.message }; } }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const user = new IPCClient({ ...base, serviceName: "user-service" });
  user.registerMethod("getUserById", async (params, ctx) => {
    const row = await user.call("db-service", "query", { id: params.userId });
    return { id: params.userId, row, depth: ctx.depth, chain: ctx.chain };
  });
  user.registerMethod("fail", async () => { const e = new Error("it broke"); e.code = "EXECUTION_FAILED"; throw e; });
  const order = new IPCClient({ ...base, serviceName: "order-service" });
  const pool = new IPCClient({ ...base, serviceName: "pooled", poolSize: 3 });
  pool.registerMethod("work", async (p) => ({ got: p.i }));
  for (const c of [user, order, pool]) c.on("error", () => {});
  await user.connect();
  await order.connect();
  await pool.connect();
  await sleep(200);   // the pool's sockets register

  // A call, a nested call to a JSON service, the context on every hop.
  const r = await order.call("user-service", "getUserById", { userId: "123", n: [2 ** 53, -1, 0.5, "é"] });
  check(r.id === "123" && r.row.id === "123", "call and nested call", r);
  check(r.depth === 2 && r.chain.join() === "order-service,order-service", "context as Bro sends it", r);
  check(r.row.ctx.depth === 3 && r.row.ctx.chain.join() === "order-service,order-service,user-service",
        "nested context extended", r.row.ctx);

  // Every failure comes back as a rejected call with the code, at once.
  let e = await rejects(order.call("ghost", "x"));
  check(e.code === "SERVICE_NOT_FOUND", "SERVICE_NOT_FOUND", e);
  e = await rejects(order.call("user-service", "nope"));
  check(e.code === "METHOD_NOT_FOUND", "METHOD_NOT_FOUND", e);
  e = await rejects(order.call("user-service", "fail"));
  check(e.code === "EXECUTION_FAILED" && /it broke/.test(e.message), "the callee's error", e);
  const t0 = Date.now();
  e = await rejects(order.call("db-service", "slow"));
  check(e.code === "TIMEOUT" && Date.now() - t0 < 4500, "TIMEOUT from the bus (call_timeout), not the client's 5 s", e);
  if (base.serializer !== "json") {
    e = await rejects(order.call("user-service", "getUserById", { userId: Buffer.from("x") }));
    check(e.code === "INVALID_MESSAGE" && /bin/.test(e.message), "a Buffer (bin) refused by name, at once", e);
  }
  // Deeper than the bus's max_depth (5 in the test's bus.conf), well within Bro's own 100.
  e = await rejects(order.call("user-service", "getUserById", { userId: "1" },
                               { root: "root-1-x", chain: ["order-service"], depth: 9, deadline: Date.now() + 5000 }));
  check(e.code === "MAX_DEPTH_EXCEEDED", "MAX_DEPTH_EXCEEDED from the bus", e);

  // poolSize > 1: answers go out on whichever socket of the pool is next.
  const got = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => order.call("pooled", "work", { i })));
  check(got.every((g, i) => g.got === i), "pool of 3 answers every call", got);

  // Heartbeats keep the connections: the bus evicts after 3 x 500 ms of silence.
  await sleep(2000);
  check((await order.call("user-service", "getUserById", { userId: "7" })).id === "7", "heartbeats keep it alive", null);

  // The connection drops: Bro reconnects, registers again, and is served.
  order.socket.destroy();
  await sleep(100);
  for (let i = 0; i < 50 && !order.isConnected(); i++) await sleep(100);
  check(order.isConnected(), "reconnected", order.getStatus());
  check((await order.call("user-service", "getUserById", { userId: "8" })).id === "8", "served after the reconnect", null);

  for (const c of [order, user, pool]) await c.disconnect();
  console.log("done");
  process.exit(0);
}
main().catch((err) => fail("exception", { message: err.message, code: err.code, stack: err.stack }));
