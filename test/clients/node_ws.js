// Send N text messages through one WebSocket connection with the Node `ws` client,
// all pipelined, and check every reply in order: "<message> - K" with K in 1..MAX.
// Usage: node node_ws.js URL [N] [MAX]. Prints "received R/N in X ms".
'use strict';
const WebSocket = require('ws');

const url = process.argv[2];
const n = Number(process.argv[3] || 10000);
const top = Number(process.argv[4] || 1000);
const bad = [];
let received = 0;
let start = 0;

const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 0 });
const timer = setTimeout(() => {
  console.log(`timed out: received ${received}/${n}`);
  process.exit(1);
}, 60000);

ws.on('open', () => {
  start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) ws.send(`message ${i}`);
});

ws.on('message', (data, isBinary) => {
  const i = received + bad.length;
  const text = data.toString('utf8');
  const m = /^message (\d+) - (\d+)$/.exec(text);
  if (isBinary || !m || Number(m[1]) !== i || Number(m[2]) < 1 || Number(m[2]) > top) {
    bad.push(`reply ${i} is ${JSON.stringify(text.slice(0, 80))}${isBinary ? ' (binary)' : ''}`);
  } else {
    received++;
  }
  if (received + bad.length === n || bad.length >= 5) ws.close(1000);
});

ws.on('close', (code) => {
  clearTimeout(timer);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  console.log(`received ${received}/${n} in ${ms.toFixed(0)} ms`);
  console.log(`close code ${code}`);
  for (const b of bad) console.log(`BAD: ${b}`);
  process.exit(received === n && bad.length === 0 && code === 1000 ? 0 : 1);
});

ws.on('error', (err) => {
  console.log(`error: ${err.message}`);
});
