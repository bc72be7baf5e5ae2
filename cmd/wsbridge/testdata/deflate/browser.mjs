// permessage-deflate in Chromium for TestDeflateRealClients: Debian's
// chromium driven by playwright-core (never a browser download). The page
// opens a WebSocket to the bridge, checks ws.extensions, and round-trips
// the messages of messages.mjs, big and small, text and binary.
//
//   node browser.mjs ws://127.0.0.1:PORT/ID
import { chromium } from 'playwright-core';
import { messages } from './messages.mjs';

const url = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless=new'],
});
try {
  const page = await browser.newPage();
  const result = await page.evaluate(async ({ url, src }) => {
    const messages = new Function(`${src}; return messages();`)();
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    await new Promise((res, rej) => { ws.onopen = res; ws.onerror = () => rej(new Error('websocket error')); });
    if (!ws.extensions.includes('permessage-deflate')) return `extension not negotiated: "${ws.extensions}"`;
    for (const m of messages) {
      const got = await new Promise((res) => { ws.onmessage = (e) => res(e.data); ws.send(m); });
      if (typeof m === 'string') {
        if (got !== m) return `text echo differs: ${m.length} sent, ${String(got).length} back`;
      } else {
        const g = new Uint8Array(got);
        if (g.length !== m.length || g.some((b, i) => b !== m[i])) return `binary echo differs: ${m.length} sent, ${g.length} back`;
      }
    }
    ws.close(1000);
    return `ok ${ws.extensions}`;
  }, { url, src: messagesSource() });
  console.log(result);
  if (!result.startsWith('ok')) process.exit(1);
} finally {
  await browser.close();
}

function messagesSource() {
  return messages.toString();
}
