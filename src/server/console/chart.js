// The signals chart: three stacked panels over the token index (entropy, norm scale, catalogued
// neuron activations), each with its own y range, drawn on one canvas. Tokens an intervention
// touched get a shaded band, so cause and effect line up vertically across the panels.

const PALETTE = ['#2a62c9', '#d9480f', '#2b8a3e', '#862e9c', '#c2255c', '#0b7285', '#e67700', '#5c940d', '#364fc7', '#a61e4d'];

export function colorOf(i) {
  return PALETTE[i % PALETTE.length];
}

function niceRange(values, floor) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (floor !== undefined) lo = Math.min(lo, floor);
  if (!Number.isFinite(lo)) return [0, 1];
  if (hi - lo < 1e-9) return [lo - 0.5, hi + 0.5];
  const pad = (hi - lo) * 0.08;
  return [lo - (floor !== undefined && lo === floor ? 0 : pad), hi + pad];
}

const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

/**
 * tokens: [{entropy, norm_scale, neurons: {address: activation}, intervened: bool}]
 * neurons: addresses in legend order; target: entropy target line or null.
 */
export function drawChart(canvas, { tokens, neurons, target }) {
  const dpr = window.devicePixelRatio || 1;
  const cssW = canvas.clientWidth || canvas.width;
  const cssH = Math.round(cssW * 0.42);
  if (canvas.width !== Math.round(cssW * dpr)) {
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, cssW, cssH);
  g.font = '11px system-ui, sans-serif';

  const left = 48;
  const right = 8;
  const top = 6;
  const gap = 16;
  const legendH = 16;
  const panelH = (cssH - top - legendH - 2 * gap - 14) / 3;
  const width = cssW - left - right;
  const n = Math.max(tokens.length, 2);
  const x = (i) => left + (width * i) / (n - 1);

  const panels = [
    { title: 'entropy (nats)', lines: [{ color: '#d9480f', values: tokens.map((t) => t.entropy) }], floor: 0, extra: target },
    { title: 'norm scale', lines: [{ color: '#2a62c9', values: tokens.map((t) => t.norm_scale) }] },
    {
      title: 'catalogued neurons',
      lines: neurons.map((a, i) => ({ color: colorOf(i), values: tokens.map((t) => t.neurons[a]) })),
    },
  ];

  panels.forEach((p, k) => {
    const y0 = top + k * (panelH + gap);
    const all = p.lines.flatMap((l) => l.values);
    if (p.extra !== null && p.extra !== undefined) all.push(p.extra);
    const [lo, hi] = niceRange(all, p.floor);
    const y = (v) => y0 + panelH - ((v - lo) / (hi - lo)) * panelH;

    g.fillStyle = 'rgba(42, 98, 201, 0.08)';
    tokens.forEach((t, i) => {
      if (t.intervened) g.fillRect(x(i) - width / (n - 1) / 2, y0, width / (n - 1), panelH);
    });
    g.strokeStyle = '#dde1e6';
    g.lineWidth = 1;
    g.strokeRect(left, y0, width, panelH);
    g.fillStyle = '#67707c';
    g.textAlign = 'right';
    g.fillText(fmt(hi), left - 4, y0 + 9);
    g.fillText(fmt(lo), left - 4, y0 + panelH);

    if (p.extra !== null && p.extra !== undefined) {
      g.setLineDash([4, 3]);
      g.strokeStyle = '#1d232b';
      g.beginPath();
      g.moveTo(left, y(p.extra));
      g.lineTo(left + width, y(p.extra));
      g.stroke();
      g.setLineDash([]);
    }
    for (const line of p.lines) {
      g.strokeStyle = line.color;
      g.lineWidth = 1.5;
      g.beginPath();
      let pen = false;
      line.values.forEach((v, i) => {
        if (!Number.isFinite(v)) {
          pen = false;
          return;
        }
        if (pen) g.lineTo(x(i), y(v));
        else g.moveTo(x(i), y(v));
        pen = true;
      });
      g.stroke();
    }
    // The title last, on a light plate, so a line passing under it does not garble it.
    g.textAlign = 'left';
    const tw = g.measureText(p.title).width;
    g.fillStyle = 'rgba(255, 255, 255, 0.85)';
    g.fillRect(left + 2, y0 + 2, tw + 6, 13);
    g.fillStyle = '#67707c';
    g.fillText(p.title, left + 5, y0 + 12);
  });

  // x axis labels and the neuron legend
  const base = top + 3 * panelH + 2 * gap;
  g.fillStyle = '#67707c';
  g.textAlign = 'left';
  g.fillText('0', left, base + 11);
  g.textAlign = 'right';
  g.fillText(`token ${Math.max(tokens.length - 1, 0)}`, left + width, base + 11);
  g.textAlign = 'left';
  let lx = left;
  const ly = base + 14 + 11;
  neurons.forEach((a, i) => {
    const w = g.measureText(a).width + 22;
    if (lx + w > left + width) return;
    g.fillStyle = colorOf(i);
    g.fillRect(lx, ly - 8, 10, 3);
    g.fillStyle = '#1d232b';
    g.fillText(a, lx + 13, ly);
    lx += w;
  });
}
