// wsbridge chat page: the browser's own WebSocket, no library, no build step.
//
// Query parameters (all optional):
//   name    your ClientId, [A-Za-z0-9._~-]{1,128}; default guest-xxxxx
//   token   sent as ?token= on the upgrade; default letmein (the demo secret)
//   bridge  wsbridge's WebSocket base URL; default ws://<this host>:7001
//
// Reconnecting follows the close codes in DESIGN.md §6:
//   1012 (restart/drain)   wait the reason's retry=N seconds, jittered ×0.5–1.5
//   4000 (replaced), 4001 (kicked)   stop: another tab took over / the backend said so
//   anything else, 1013 and failed upgrades included: full-jitter exponential
//   backoff, random(0, min(30 s, 0.5 s × 2^attempt)); the attempt count
//   restarts once a connection has stayed up for 10 s.
//
// Elements tests rely on: #status (text and data-state: connecting,
// connected, reconnecting, disconnected), #messages (li.message[data-from],
// li.system[data-code]), #presence (one li per present ClientId), #text, #send.
'use strict';

(() => {
  const BASE_MS = 500;
  const CAP_MS = 30000;
  const STABLE_MS = 10000;
  const ID_RE = /^[A-Za-z0-9._~-]{1,128}$/;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  let name = params.get('name') || '';
  if (!ID_RE.test(name) || name === '.' || name === '..') {
    name = 'guest-' + Math.random().toString(36).slice(2, 7);
    params.set('name', name); // keep it across reloads
    history.replaceState(null, '', '?' + params);
  }
  const token = params.get('token') ?? 'letmein';
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const bridge = (params.get('bridge') || `${scheme}://${location.hostname || '127.0.0.1'}:7001`).replace(/\/+$/, '');
  const url = `${bridge}/${name}?token=${encodeURIComponent(token)}`;

  let ws = null; // the current socket, or null while waiting to retry
  let attempt = 0; // failed tries since the last stable connection
  let openedAt = 0; // when ws opened, 0 if it has not
  let everConnected = false;
  let retryTimer = 0;
  let presenceRev = 0; // newest presence revision shown on this connection

  function setStatus(state, detail) {
    const s = $('status');
    s.textContent = state;
    s.dataset.state = state;
    $('detail').textContent = detail ? `· ${detail}` : '';
  }

  function enable(on) {
    $('text').disabled = !on;
    $('send').disabled = !on;
  }

  function addLine(cls, from, text, code) {
    const list = $('messages');
    const li = document.createElement('li');
    li.className = cls;
    if (from) {
      li.dataset.from = from;
      const b = document.createElement('b');
      b.textContent = from + ': ';
      li.append(b);
    }
    if (code !== undefined) li.dataset.code = String(code);
    li.append(text);
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(li);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function showPresence(users) {
    const ul = $('presence');
    ul.replaceChildren(...users.map((u) => {
      const li = document.createElement('li');
      li.textContent = u;
      if (u === name) li.className = 'me';
      return li;
    }));
  }

  function onData(data) {
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      addLine('system', '', String(data));
      return;
    }
    if (ev.type === 'message') {
      addLine('message', String(ev.from), String(ev.text));
    } else if (ev.type === 'presence' && Array.isArray(ev.users)) {
      // The hello reply and a push can arrive in either order: keep the newest.
      const rev = Number(ev.rev) || 0;
      if (rev < presenceRev) return;
      presenceRev = rev;
      showPresence(ev.users.map(String));
      if (ev.joined) addLine('system', '', `${ev.joined} joined`);
      if (ev.left) addLine('system', '', `${ev.left} left`);
    }
  }

  function connect() {
    retryTimer = 0;
    setStatus(everConnected ? 'reconnecting' : 'connecting', attempt ? `attempt ${attempt + 1}` : '');
    const sock = new WebSocket(url);
    ws = sock;
    sock.onopen = () => {
      openedAt = Date.now();
      presenceRev = 0;
      everConnected = true;
      setStatus('connected', '');
      enable(true);
      sock.send(JSON.stringify({ type: 'hello' })); // the reply is the presence list
    };
    sock.onmessage = (e) => onData(e.data);
    sock.onclose = (e) => onClose(sock, e);
    // onerror is always followed by onclose; nothing to do there.
  }

  // retryDelay returns how long to wait before the next try, or -1 for never.
  function retryDelay(code, reason) {
    if (code === 4000 || code === 4001) return -1;
    if (code === 1012) {
      const m = /(?:^|[\s;,])retry=(\d+(?:\.\d+)?)/.exec(reason);
      if (m) return Math.min(Number(m[1]) * 1000, CAP_MS) * (0.5 + Math.random());
    }
    const ceil = Math.min(CAP_MS, BASE_MS * 2 ** Math.min(attempt, 16));
    attempt++;
    return Math.random() * ceil;
  }

  function onClose(sock, e) {
    if (sock !== ws) return;
    ws = null;
    enable(false);
    const wasOpen = openedAt !== 0;
    if (wasOpen && Date.now() - openedAt >= STABLE_MS) attempt = 0;
    openedAt = 0;
    const why = `closed ${e.code}${e.reason ? ' ' + e.reason : ''}`;
    const delay = retryDelay(e.code, e.reason);
    if (delay < 0) {
      const what = e.code === 4000 ? 'replaced by a newer connection with this name' : 'disconnected by the server';
      setStatus('disconnected', what);
      addLine('system', '', `${why}; ${e.reason ? '' : what + '; '}not reconnecting (reload to try again)`, e.code);
      return;
    }
    const secs = (delay / 1000).toFixed(1);
    if (wasOpen) addLine('system', '', `${why}; reconnecting in ${secs} s`, e.code);
    setStatus('reconnecting', `${why}; next try in ${secs} s`);
    retryTimer = setTimeout(connect, delay);
  }

  // Coming back online: try now rather than at the end of a long backoff.
  window.addEventListener('online', () => {
    if (retryTimer) {
      clearTimeout(retryTimer);
      connect();
    }
  });

  $('form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('text');
    const text = input.value.trim();
    if (!text || !ws || ws.readyState !== WebSocket.OPEN) return;
    ws.send(JSON.stringify({ text }));
    input.value = '';
    input.focus();
  });

  $('me').textContent = name;
  connect();
})();
