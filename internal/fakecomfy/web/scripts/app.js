// The fake ComfyUI frontend. It does what the real one does at start-up, as
// far as a proxy can tell: absolute /api/... fetches built from location, a
// dynamic import() of every URL /api/extensions lists, and a websocket to
// ws(s)://location.host/ws. It reports progress on document.body.dataset so
// a browser test can poll for it:
//   systemStats     HTTP status of /api/system_stats (or "error: ...")
//   extensions      number of extension URLs listed
//   extensionsLoaded / extensionsFailed  counts after import()
//   ws              "open", then "closed"; wsCloseCode on close
//   wsStatus        "received" once a status frame arrived
//   wsLast          type of the last JSON frame; wsBinary counts binary frames
//   execution       "done" when an executing frame with node null arrives
// No inline script and no external URL, so it runs under a strict CSP.

const data = document.body.dataset;

function randomId() {
  if (window.crypto && crypto.randomUUID) {
    return crypto.randomUUID();
  }
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}

const clientId = randomId();
window.comfyClientId = clientId;

async function loadSystemStats() {
  try {
    const r = await fetch('/api/system_stats');
    data.systemStats = String(r.status);
  } catch (e) {
    data.systemStats = 'error: ' + e;
  }
}

async function loadExtensions() {
  let loaded = 0;
  let failed = 0;
  try {
    const r = await fetch('/api/extensions');
    const urls = await r.json();
    data.extensions = String(urls.length);
    for (const url of urls) {
      try {
        await import(url);
        loaded++;
      } catch (e) {
        failed++;
        console.error('extension', url, e);
      }
    }
  } catch (e) {
    data.extensions = 'error: ' + e;
  }
  data.extensionsLoaded = String(loaded);
  data.extensionsFailed = String(failed);
}

function openSocket() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(proto + '//' + location.host + '/ws?clientId=' + encodeURIComponent(clientId));
  ws.binaryType = 'arraybuffer';
  let binary = 0;
  ws.addEventListener('open', () => {
    data.ws = 'open';
  });
  ws.addEventListener('message', (ev) => {
    if (typeof ev.data !== 'string') {
      binary++;
      data.wsBinary = String(binary);
      return;
    }
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    data.wsLast = msg.type;
    if (msg.type === 'status') {
      data.wsStatus = 'received';
    }
    if (msg.type === 'executing' && msg.data && msg.data.node === null) {
      data.execution = 'done';
    }
  });
  ws.addEventListener('close', (ev) => {
    data.ws = 'closed';
    data.wsCloseCode = String(ev.code);
  });
  ws.addEventListener('error', () => {
    data.wsError = 'true';
  });
  window.comfySocket = ws;
}

// queuePrompt posts a one-node prompt for this page's websocket client and
// resolves to the HTTP status.
window.queuePrompt = async () => fetch('/api/prompt', {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ prompt: { '1': { class_type: 'X', inputs: {} } }, client_id: clientId }),
}).then((r) => r.status);

openSocket();
loadSystemStats();
loadExtensions();
