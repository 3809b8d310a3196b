// An Exprsn-style IPC worker, written from the wire facts of issue 12
// (README "Many nodes", Exprsn workers): ioredis 5 with keyPrefix 'ipc:'
// for pub/sub (which does not prefix channel names) and 'ipc:data:' for
// keys, broker tokens signed and verified with jsonwebtoken (HS256,
// IPC_BROKER_KEY), discovery by SETEX ipc:data:services:<name>, acks on
// ipc:<source>.  The test drives it with JSON lines on stdin and reads
// what it heard as JSON lines on stdout.
'use strict';
const Redis = require('ioredis');
const jwt = require('jsonwebtoken');
const crypto = require('crypto');
const os = require('os');
const readline = require('readline');

const path = process.env.REDIS_PATH;
const name = process.env.SERVICE;
const key = process.env.IPC_BROKER_KEY;
const ns = 'ipc';
const conn = (keyPrefix) => new Redis({ path, keyPrefix, maxRetriesPerRequest: 3, enableOfflineQueue: true });
const pub = conn('ipc:'), sub = conn('ipc:'), data = conn('ipc:data:');

const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// BrokerTokenManager.generateToken, as Exprsn writes it.
async function generateToken(payload, o) {
  const id = crypto.randomBytes(16).toString('hex');
  const now = Date.now();
  const claims = {
    id, type: 'broker', version: '1.0',
    source: o.source || name, target: o.target || '*', operation: o.operation || 'ipc',
    iat: Math.floor(now / 1000),
    exp: o.stateful ? null : Math.floor((now + (o.ttl || 300) * 1000) / 1000),
    stateful: !!o.stateful, stateKey: o.stateful ? `state:${id}` : null,
    rateLimitExempt: true, authBypass: false,
    data: payload, metadata: o.metadata || {},
  };
  const signKey = o.badKey ? 'not-the-key-0123456789abcdefghij' : key;
  // jsonwebtoken refuses exp: null in an object; a string payload is signed as is.
  const token = o.stateful
    ? jwt.sign(JSON.stringify(claims), signKey, { algorithm: 'HS256' })
    : jwt.sign(claims, signKey, { algorithm: 'HS256', noTimestamp: true });
  const meta = { id, source: claims.source, target: claims.target, operation: claims.operation, created: now,
                 expires: o.stateful ? null : now + (o.ttl || 300) * 1000, stateful: !!o.stateful, revoked: false };
  if (o.stateful) await data.set(`token:${id}`, JSON.stringify(meta));
  else await data.setex(`token:${id}`, o.ttl || 300, JSON.stringify(meta));
  return { token, id };
}

async function verifyToken(token) {
  const decoded = jwt.decode(token);
  if (!decoded || decoded.type !== 'broker') throw new Error('Invalid broker token type');
  const rec = await data.get(`token:${decoded.id}`);
  if (rec && JSON.parse(rec).revoked === true) throw new Error('Token has been revoked');
  const v = jwt.verify(token, key, { algorithms: ['HS256'] });
  if (!v.stateful && v.exp && Math.floor(Date.now() / 1000) > v.exp) throw new Error('Token has expired');
  return v;
}

async function emit(c) {
  const target = c.target || 'broadcast';
  const operation = c.operation || 'event';
  const metadata = c.metadata || {};
  let token = c.token;
  if (!c.noToken && !token) {
    ({ token } = await generateToken(c.data, {
      target: c.tokenTarget || target, operation, metadata: { event: c.tokenEvent || c.event, ...metadata },
      stateful: c.stateful, badKey: c.badKey, source: c.tokenSource,
    }));
  }
  const message = { event: c.event, data: c.data, source: c.source || name, target, operation, token,
                    requireAck: !!c.requireAck, timestamp: Date.now(), metadata };
  const channel = target === 'broadcast' ? `${ns}:broadcast` : `${ns}:${target}`;
  await pub.publish(channel, JSON.stringify(message));
  return message;
}

async function handle(channel, raw) {
  let m;
  try { m = JSON.parse(raw); } catch (e) { out({ unparsable: raw.slice(0, 200) }); return; }
  if (m.source === name) return;                          // our own broadcasts come back
  let claims;
  try { claims = await verifyToken(m.token); } catch (e) {
    out({ rejected: { channel, event: m.event, source: m.source, why: e.message } });
    return;
  }
  if (m.target !== name && m.target !== 'broadcast') return;
  out({ got: { channel, event: m.event, data: m.data, source: m.source, target: m.target, operation: m.operation,
               metadata: m.metadata, claims } });
  if (m.requireAck) {
    const ack = { event: 'ack', data: { originalEvent: m.event, originalId: m.token }, source: name,
                  target: m.source, operation: 'ack', timestamp: Date.now() };
    await pub.publish(`${ns}:${m.source}`, JSON.stringify(ack));
  }
}

async function getActiveServices() {
  const keys = await data.keys('services:*');
  const services = [];
  for (const k of keys) {
    const v = await data.get(k);
    if (v) services.push(JSON.parse(v));
  }
  return services;
}

async function main() {
  sub.on('message', (channel, message) => { handle(channel, message).catch((e) => out({ error: e.message })); });
  await sub.subscribe(`${ns}:${name}`, `${ns}:broadcast`);
  const info = { name, namespace: ns, pid: process.pid, hostname: os.hostname(), registered: Date.now(), lastSeen: Date.now() };
  await data.setex(`services:${name}`, 60, JSON.stringify(info));
  out({ ready: true });
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) {
    const c = JSON.parse(line);
    try {
      if (c.cmd === 'emit') out({ emitted: await emit(c) });
      else if (c.cmd === 'services') out({ services: await getActiveServices() });
      else if (c.cmd === 'mint') out({ minted: await generateToken(c.data, c) });
      else if (c.cmd === 'revoke') {
        const rec = JSON.parse((await data.get(`token:${c.id}`)) || '{}');
        rec.revoked = true;
        await data.setex(`token:${c.id}`, 86400, JSON.stringify(rec));
        out({ revoked: c.id });
      } else if (c.cmd === 'flood') {
        // An unmodified IPCWorker republishes its local notifications to
        // broadcast (emit is its EventEmitter's emit): 'sent', 'received', ...
        const t0 = Date.now();
        for (let i = 0; i < c.n; i++) {
          const { token } = await generateToken({ event: 'x', target: 'broadcast' }, { target: 'broadcast', operation: 'event', metadata: { event: 'sent' } });
          pub.publish(`${ns}:broadcast`, JSON.stringify({ event: i % 2 ? 'sent' : 'received', data: { i }, source: name,
                      target: 'broadcast', operation: 'event', token, requireAck: false, timestamp: Date.now(), metadata: {} }));
        }
        await pub.ping();
        out({ flooded: c.n, ms: Date.now() - t0 });
      } else if (c.cmd === 'quit') break;
    } catch (e) { out({ error: e.message }); }
  }
  await Promise.all([pub.quit(), sub.quit(), data.quit()]);
  process.exit(0);
}

main().catch((e) => { out({ fatal: e.message }); process.exit(1); });
