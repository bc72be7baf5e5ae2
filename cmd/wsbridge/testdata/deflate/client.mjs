// permessage-deflate client for TestDeflateRealClients: node's ws, which
// offers the extension by default (threshold 0 here so every message it
// sends goes compressed).
//
//   node client.mjs ws://127.0.0.1:PORT/ID
//
// Prints "ok <extension>" once every echo matched, else exits non-zero.
import WebSocket from 'ws';
import { messages } from './messages.mjs';

const ws = new WebSocket(process.argv[2], { perMessageDeflate: { threshold: 0 } });
const fail = (msg) => { console.error(msg); process.exit(1); };
setTimeout(() => fail('timeout'), 20000).unref();
ws.on('error', (e) => fail(`error: ${e.message}`));
ws.on('open', async () => {
  if (!ws.extensions.includes('permessage-deflate')) fail(`extension not negotiated: ${ws.extensions}`);
  for (const m of messages()) {
    const got = await new Promise((res) => {
      ws.once('message', (data, isBinary) => res({ data, isBinary }));
      ws.send(m);
    });
    const want = typeof m === 'string' ? Buffer.from(m) : Buffer.from(m);
    if (got.isBinary !== (typeof m !== 'string') || !Buffer.from(got.data).equals(want)) {
      fail(`echo differs: sent ${want.length} bytes, got ${got.data.length} (binary ${got.isBinary})`);
    }
  }
  console.log('ok', ws.extensions);
  ws.close(1000);
});
