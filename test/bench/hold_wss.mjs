// Benchmark helper: hold N wss:// connections open (Node `ws`), for the
// memory figure of HAProxy with TLS. Each connection sends one message and
// waits for its reply, so the upgrade has gone through every hop. Once all
// are open, the pid goes to READY_FILE; on SIGUSR1 every connection closes
// with 1000 and the process exits (0 when every connection opened).
// Usage: node hold_wss.mjs URL N READY_FILE   (NODE_EXTRA_CA_CERTS trusts the test CA)
import { writeFileSync } from 'node:fs';
import WebSocket from 'ws';

const [url, nArg, readyFile] = process.argv.slice(2);
const n = Number(nArg);
const sockets = [];
let open = 0;
let failed = 0;
let started = 0;

const timer = setTimeout(() => {
  console.log(`timed out: ${open}/${n} open, ${failed} failed`);
  process.exit(1);
}, 120000);

function done() {
  if (open + failed < n) return;
  if (failed) {
    console.log(`open ${open}/${n}, ${failed} failed`);
    process.exit(1);
  }
  writeFileSync(readyFile, `${process.pid}\n`);
}

// a few at a time, as real clients arrive, not all in one tick
function next() {
  while (started < n && started - open - failed < 50) {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    started++;
    sockets.push(ws);
    ws.once('open', () => ws.send('hello'));
    ws.once('message', () => { open++; done(); next(); });
    ws.on('error', () => { failed++; done(); next(); });
  }
}
next();

process.on('SIGUSR1', () => {
  clearTimeout(timer);
  let closed = 0;
  for (const ws of sockets) {
    ws.once('close', () => { if (++closed === sockets.length) process.exit(0); });
    ws.close(1000);
  }
  setTimeout(() => process.exit(0), 20000).unref();
});
