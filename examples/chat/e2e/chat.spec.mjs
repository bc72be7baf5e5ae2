// Browser test of the chat example: two pages in Debian's headless Chromium,
// driven by playwright-core (which never downloads a browser here), talk
// through a real wsbridge and the PHP backend.
//
//   CHAT_URL=http://127.0.0.1:8000/ BRIDGE_URL=ws://127.0.0.1:7001 node --test chat.spec.mjs
//
// Environment:
//   CHAT_URL         the page, served by examples/php/router.php (required)
//   BRIDGE_URL       wsbridge's WebSocket base URL (required)
//   RESTART_URL      optional: a POST there must restart wsbridge on the same
//                    ports and answer 200 once the new process listens;
//                    examples_test.go serves it. Without it the restart test
//                    is skipped.
//   SCREENSHOT_DIR   where the PNGs go (default $ARTIFACTS_DIR, else examples/out)
//   CHROMIUM         the browser (default /usr/bin/chromium)
//   CHAT_TOKEN       the demo secret (default letmein)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const chatURL = required('CHAT_URL');
const bridgeURL = required('BRIDGE_URL');
const restartURL = process.env.RESTART_URL || '';
const shotDir = resolve(process.env.SCREENSHOT_DIR || process.env.ARTIFACTS_DIR || join(here, '..', '..', 'out'));
const token = process.env.CHAT_TOKEN || 'letmein';
const WAIT = 15000; // ms for any one thing to show up on a page

// Unique names, so a run never meets a hand-opened tab or an earlier run.
const run = `${process.pid}`;
const nameA = `alice-${run}`;
const nameB = `bob-${run}`;

let userDataDir;
let context;
let pageA;
let pageB;
const pageErrors = [];

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (see the comment at the top of chat.spec.mjs)`);
  return v;
}

function pageURL(name) {
  const u = new URL(chatURL);
  u.searchParams.set('name', name);
  u.searchParams.set('bridge', bridgeURL);
  u.searchParams.set('token', token);
  return u.href;
}

async function openPage(page, name) {
  page.on('pageerror', (err) => pageErrors.push(`${name}: ${err.message}`));
  await page.goto(pageURL(name));
  await waitConnected(page);
}

function waitConnected(page) {
  return page.waitForSelector('#status[data-state="connected"]', { timeout: WAIT });
}

// waitPresence waits until page's #presence lists every one of names.
function waitPresence(page, names) {
  return page.waitForFunction(
    (want) => {
      const got = [...document.querySelectorAll('#presence li')].map((li) => li.textContent);
      return want.every((n) => got.includes(n));
    },
    names,
    { timeout: WAIT },
  );
}

// waitMessage waits until page shows a chat line from `from` with `text`.
function waitMessage(page, from, text) {
  return page.waitForFunction(
    ([f, t]) =>
      [...document.querySelectorAll('#messages li.message')].some(
        (li) => li.dataset.from === f && li.textContent === `${f}: ${t}`,
      ),
    [from, text],
    { timeout: WAIT },
  );
}

async function send(page, text) {
  await page.fill('#text', text, { timeout: WAIT }); // waits until enabled (connected)
  await page.click('#send', { timeout: WAIT });
}

async function screenshot(page, file) {
  await mkdir(shotDir, { recursive: true });
  const path = join(shotDir, file);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
  return path;
}

before(async () => {
  userDataDir = await mkdtemp(join(tmpdir(), 'wsbridge-chat-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 900, height: 560 },
    timeout: 30000,
  });
  pageA = context.pages()[0] ?? (await context.newPage());
  pageB = await context.newPage();
});

after(async () => {
  await context?.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
});

test('both pages connect through wsbridge and see each other present', async () => {
  await openPage(pageA, nameA);
  await openPage(pageB, nameB);
  await waitPresence(pageA, [nameA, nameB]);
  await waitPresence(pageB, [nameA, nameB]);
  assert.equal(await pageA.textContent('#me'), nameA);
  assert.deepEqual(pageErrors, []);
});

test('a message sent in page A reaches page B through the PHP push', async () => {
  const text = `hello from A, run ${run}`;
  await send(pageA, text);
  await waitMessage(pageB, nameA, text);
  await waitMessage(pageA, nameA, text); // the sender gets the broadcast too
  await screenshot(pageB, 'chat.png');
  assert.deepEqual(pageErrors, []);
});

test('after a bridge restart both pages reconnect by themselves', { skip: !restartURL && 'RESTART_URL not set' }, async () => {
  const res = await fetch(restartURL, { method: 'POST', signal: AbortSignal.timeout(30000) });
  assert.equal(res.status, 200, `restart: ${await res.text()}`);
  // Each page was told 1012 retry=N by the draining bridge and waits
  // N seconds × 0.5–1.5 (the line reads "closed 1012 retry=N; reconnecting in X s")...
  for (const page of [pageA, pageB]) {
    const line = await page.waitForSelector('#messages li.system[data-code="1012"]', { timeout: WAIT });
    const text = await line.textContent();
    const m = /retry=(\d+); reconnecting in ([\d.]+) s/.exec(text);
    assert.ok(m, `1012 line: ${text}`);
    const [n, wait] = [Number(m[1]), Number(m[2])];
    assert.ok(wait >= 0.5 * n - 0.05 && wait <= 1.5 * n + 0.05, `reconnect delay ${wait} s for retry=${n}`);
  }
  // ...and is back on the new process on its own.
  await waitConnected(pageA);
  await waitConnected(pageB);
  await waitPresence(pageA, [nameA, nameB]);
  await waitPresence(pageB, [nameA, nameB]);
  const text = `hello again from B, run ${run}`;
  await send(pageB, text);
  await waitMessage(pageA, nameB, text);
  await screenshot(pageA, 'chat-after-restart.png');
  assert.deepEqual(pageErrors, []);
});
