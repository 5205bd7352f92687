// The operator console: generate with the `confidence` extension and watch each token's signals,
// read the neuron catalogue, change interventions, and follow other requests on the monitor
// stream. Public API only; every piece of server text goes in through textContent, never as HTML.

import { colorOf, drawChart } from './chart.js';
import { attachTooltip, interventionCount, makeTokenSpan, num } from './tokens.js';

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

const state = {
  apiKey: sessionStorage.getItem('cs.apiKey') ?? '',
  adminToken: sessionStorage.getItem('cs.adminToken') ?? '',
  catalogue: null,
  maxEntropy: 5,
  tokens: [],
  ownRequests: new Set(),
  running: null,
  target: null,
  chartQueued: false,
};

// ------------------------------------------------------------------ HTTP, with the right token

class ApiFailure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = 'GET', body, admin = false, headers = {}, signal } = {}) {
  const token = admin ? state.adminToken : state.apiKey;
  const res = await fetch(path, {
    method,
    signal,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.ok) return res;
  let message = `${res.status} ${res.statusText}`;
  try {
    message = (await res.json()).error?.message ?? message;
  } catch {
    // not JSON: keep the status line
  }
  if (res.status === 401) askForTokens(admin ? 'admin' : 'api', message);
  throw new ApiFailure(res.status, message);
}

function askForTokens(which, why) {
  $('auth-why').textContent = why ?? 'Tokens stay in this tab (sessionStorage).';
  $('api-key').value = state.apiKey;
  $('admin-token').value = state.adminToken;
  if (!$('auth').open) $('auth').showModal();
  (which === 'admin' ? $('admin-token') : $('api-key')).focus();
}

$('show-auth').addEventListener('click', () => askForTokens('api'));
$('auth-form').addEventListener('submit', (ev) => {
  if (ev.submitter?.value !== 'save') return;
  state.apiKey = $('api-key').value.trim();
  state.adminToken = $('admin-token').value.trim();
  sessionStorage.setItem('cs.apiKey', state.apiKey);
  sessionStorage.setItem('cs.adminToken', state.adminToken);
  loadCatalogue();
  loadInterventions();
  connectMonitor();
});

const setStatus = (text) => ($('status').textContent = text);

// ------------------------------------------------------------------ tokens, shading, tooltip

const tokenSpan = (text, c) => makeTokenSpan(text, c, state.maxEntropy);
for (const box of [$('output'), $('feed')]) attachTooltip(box, $('tooltip'));

function queueChart() {
  if (state.chartQueued) return;
  state.chartQueued = true;
  requestAnimationFrame(() => {
    state.chartQueued = false;
    const neurons = state.catalogue ? [...new Set([...state.catalogue.entropy, ...state.catalogue.frequency])] : [];
    drawChart($('chart'), { tokens: state.tokens, neurons, target: state.target });
  });
}
window.addEventListener('resize', queueChart);

// ------------------------------------------------------------------ generation over SSE

/** Yields each `data:` payload of an SSE response body (the [DONE] marker ends it). */
async function* sseData(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      if (data === '[DONE]') return;
      if (data) yield JSON.parse(data);
    }
  }
}

function requestBody() {
  const intOr = (id, d) => ($(id).value === '' ? d : Number($(id).value));
  const body = {
    model: state.catalogue?.model ?? 'default',
    max_tokens: intOr('max-tokens', 64),
    temperature: intOr('temperature', 1),
    top_p: intOr('top-p', 1),
    top_k: intOr('top-k', 0),
    stream: true,
    confidence: true,
  };
  if ($('seed').value !== '') body.seed = Number($('seed').value);
  if ($('endpoint').value === 'chat') body.messages = [{ role: 'user', content: $('prompt').value }];
  else body.prompt = $('prompt').value;
  return body;
}

$('prompt-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  if (state.running) return;
  const chat = $('endpoint').value === 'chat';
  const requestId = `console-${crypto.randomUUID()}`;
  state.ownRequests.add(requestId);
  state.tokens = [];
  const out = $('output');
  out.replaceChildren(chat ? '' : el('span', { class: 'prompt' }, $('prompt').value));
  $('summary').textContent = '';
  const controller = new AbortController();
  state.running = controller;
  $('run').disabled = true;
  $('stop').disabled = false;
  setStatus('generating…');
  try {
    const res = await api(chat ? '/v1/chat/completions' : '/v1/completions', {
      method: 'POST',
      body: requestBody(),
      headers: { 'x-request-id': requestId },
      signal: controller.signal,
    });
    for await (const chunk of sseData(res)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices?.[0];
      if (!choice) continue;
      const text = chat ? (choice.delta?.content ?? '') : (choice.text ?? '');
      const c = choice.confidence;
      if (!c) {
        if (text) out.append(text);
        continue;
      }
      out.append(tokenSpan(text, c));
      state.tokens.push({
        entropy: c.entropy,
        norm_scale: c.norm_scale,
        neurons: { ...c.frequency_neurons, ...c.entropy_neurons },
        intervened: interventionCount(c) > 0,
      });
      queueChart();
    }
    const e = state.tokens.map((t) => t.entropy);
    const mean = e.reduce((a, b) => a + b, 0) / Math.max(e.length, 1);
    $('summary').textContent = `${e.length} tokens · mean entropy ${num(mean)} nats · ${state.tokens.filter((t) => t.intervened).length} intervened`;
    setStatus('');
  } catch (err) {
    setStatus(err.name === 'AbortError' ? 'stopped' : `error: ${err.message}`);
  } finally {
    state.running = null;
    $('run').disabled = false;
    $('stop').disabled = true;
  }
});
$('stop').addEventListener('click', () => state.running?.abort());

// ------------------------------------------------------------------ catalogue and interventions

const MODES = ['clamp', 'scale', 'add', 'mean_ablate', 'target_entropy'];

function causalText(c) {
  if (!c) return '—';
  const f = c.norm_mediated_fraction;
  return `${num(c.total.mean_abs_delta_loss, 4)} / ${num(c.direct.mean_abs_delta_loss, 4)}${f === null ? '' : ` · ${(100 * f).toFixed(0)}% norm`}`;
}

function neuronRow(n, i) {
  const mode = el('select', { 'aria-label': `mode for ${n.address}` }, ...MODES.map((m) => el('option', { value: m }, m)));
  const value = el('input', { type: 'number', step: 'any', 'aria-label': `value for ${n.address}`, value: '0' });
  mode.addEventListener('change', () => (value.disabled = mode.value === 'mean_ablate'));
  const apply = el('button', { type: 'button', class: 'small', 'data-neuron': n.address }, 'Apply');
  apply.addEventListener('click', () => {
    const body =
      mode.value === 'target_entropy'
        ? { mode: 'target_entropy', value: Number(value.value), neurons: [n.address] }
        : { neuron: n.address, mode: mode.value, ...(mode.value === 'mean_ablate' ? {} : { value: Number(value.value) }) };
    createIntervention(body);
  });
  const swatch = el('span', {}, '■ ');
  swatch.style.color = colorOf(i);
  return el(
    'tr',
    { 'data-neuron': n.address },
    el('td', {}, swatch, n.address),
    el('td', {}, ...n.roles.map((r) => el('span', { class: `role ${r}` }, r))),
    el('td', { class: 'num' }, num(n.rho)),
    el('td', { class: 'num' }, num(n.logit_var)),
    el('td', { class: 'num' }, num(n.freq_score)),
    el('td', { class: 'num' }, num(n.calibration_mean)),
    el('td', { class: 'num' }, causalText(n.causal)),
    el('td', { class: 'ctl' }, mode, ' ', value, ' ', apply),
  );
}

async function loadCatalogue() {
  try {
    const c = await (await api('/v1/neurons')).json();
    state.catalogue = c;
    state.maxEntropy = c.max_entropy;
    $('legend-max').textContent = `0 – ${num(c.max_entropy, 2)} nats (uniform)`;
    $('model').textContent = `${c.model} · layer ${c.layer} · d_mlp ${c.d_mlp}`;
    const p = c.provenance;
    $('provenance').textContent =
      p.kind === 'analyzed'
        ? `analyzed on ${p.corpus?.description ?? 'a corpus'} (${p.corpus?.tokens ?? '?'} tokens${p.corpus?.synthetic ? ', synthetic' : ''})`
        : p.kind === 'weights_only'
          ? 'weights only (no corpus)'
          : 'watched set only';
    $('neurons').replaceChildren(...c.neurons.map(neuronRow));
    queueChart();
  } catch (err) {
    $('neurons').replaceChildren(el('tr', {}, el('td', { colspan: '8', class: 'error' }, err.message)));
  }
}

async function createIntervention(body) {
  $('iv-error').textContent = '';
  try {
    await api('/v1/interventions', { method: 'POST', body, admin: true });
    if (body.mode === 'target_entropy') state.target = body.value;
  } catch (err) {
    $('iv-error').textContent = err.message;
  }
  loadInterventions();
}

$('target-set').addEventListener('click', () => {
  if ($('target-value').value === '') return;
  createIntervention({ mode: 'target_entropy', value: Number($('target-value').value) });
});

function describe(iv) {
  const scope = iv.neurons ? iv.neurons.join(', ') : iv.neuron;
  if (iv.mode === 'mean_ablate') return `${scope} mean_ablate (${num(iv.value)})`;
  return `${scope} ${iv.mode} ${num(iv.value)}`;
}

async function loadInterventions() {
  const list = $('interventions');
  try {
    const { data } = await (await api('/v1/interventions', { admin: true })).json();
    state.target = data.find((iv) => iv.mode === 'target_entropy')?.value ?? null;
    list.replaceChildren(
      ...data.map((iv) => {
        const source = iv.source ?? 'api';
        const remove = el('button', { type: 'button', class: 'small danger', 'data-id': iv.id }, 'Remove');
        if (source === 'file') {
          remove.disabled = true;
          remove.title = `declared in ${iv.origin ?? 'the interventions file'}; edit the file to change it`;
        }
        remove.addEventListener('click', async () => {
          try {
            await api(`/v1/interventions/${encodeURIComponent(iv.id)}`, { method: 'DELETE', admin: true });
          } catch (err) {
            $('iv-error').textContent = err.message;
          }
          loadInterventions();
        });
        return el(
          'li',
          { 'data-id': iv.id },
          el('span', { class: 'grow' }, describe(iv)),
          el('span', { class: 'src' }, iv.request_id ? `request ${iv.request_id}` : source),
          iv.expires_at ? el('span', { class: 'muted' }, `until ${new Date(iv.expires_at).toLocaleTimeString()}`) : '',
          remove,
        );
      }),
    );
    if (data.length === 0) list.replaceChildren(el('li', { class: 'muted' }, 'none'));
  } catch (err) {
    list.replaceChildren(el('li', { class: 'error' }, err.status === 401 ? 'admin token needed to list interventions' : err.message));
  }
  queueChart();
}

// ------------------------------------------------------------------ monitor stream: other requests

const feedItems = new Map();
const FEED_KEEP = 8;
let monitor = null;
let retryMs = 1000;

function feedEntry(requestId) {
  let item = feedItems.get(requestId);
  if (item) return item;
  item = el('div', { class: 'feed-req' }, el('span', { class: 'rid' }, requestId));
  feedItems.set(requestId, item);
  $('feed').prepend(item);
  for (const [id, node] of feedItems) {
    if (feedItems.size <= FEED_KEEP) break;
    node.remove();
    feedItems.delete(id);
  }
  return item;
}

function connectMonitor() {
  monitor?.close();
  const url = new URL('/v1/monitor/stream', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (state.adminToken) url.searchParams.set('token', state.adminToken);
  const ws = new WebSocket(url);
  monitor = ws;
  ws.onopen = () => {
    retryMs = 1000;
    $('feed-state').textContent = 'connected';
  };
  ws.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    if (ev.type === 'intervention') return loadInterventions();
    if (!ev.request_id || state.ownRequests.has(ev.request_id)) return;
    if (ev.type === 'request_start') feedEntry(ev.request_id);
    else if (ev.type === 'token') feedEntry(ev.request_id).append(tokenSpan(ev.text, ev));
    else if (ev.type === 'request_end') feedEntry(ev.request_id).classList.add('ended');
  };
  ws.onclose = () => {
    if (monitor !== ws) return;
    $('feed-state').textContent = state.adminToken
      ? 'disconnected; retrying'
      : 'disconnected (the stream may need the admin token); retrying';
    setTimeout(connectMonitor, retryMs);
    retryMs = Math.min(retryMs * 2, 30000);
  };
}

loadCatalogue();
loadInterventions();
connectMonitor();
setInterval(loadInterventions, 10000);
