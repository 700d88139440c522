// Benchmark peer: a WebSocket server on Node's `ws` package (from the
// tests' node_modules, test/node_modules).  Every message comes back with " - N"
// appended (N uniform in 1..1000).  Usage: node peer_ws.mjs PORT [HOST]
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2]);
const host = process.argv[3] || '127.0.0.1';
const server = new WebSocketServer({ port, host, perMessageDeflate: false });

server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => {
    const n = 1 + Math.floor(Math.random() * 1000);
    if (isBinary) socket.send(Buffer.concat([data, Buffer.from(` - ${n}`)]));
    else socket.send(`${data} - ${n}`);
  });
  socket.on('error', () => {});
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    for (const client of server.clients) client.terminate();
    server.close(() => process.exit(0));
  });
}
