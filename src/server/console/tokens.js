// Tokens as the console shows them: a span shaded by the entropy of the distribution the token was
// drawn from (transparent = certain, deep orange = uniform over the vocabulary), and a tooltip with
// every signal of its record. Shared by the generation view and the live feed.

export const num = (v, d = 3) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '—');

/** How many interventions acted on a token: the record carries {count, digest}. */
export const interventionCount = (c) => c.interventions?.count ?? 0;

export function shade(entropy, maxEntropy) {
  const a = Math.max(0, Math.min(1, entropy / maxEntropy)) * 0.85;
  return `rgba(232, 93, 36, ${a.toFixed(3)})`;
}

const signalsOf = new WeakMap();

export function makeTokenSpan(text, c, maxEntropy) {
  const span = document.createElement('span');
  span.className = interventionCount(c) > 0 ? 'tok intervened' : 'tok';
  // An empty piece (half of a multi-byte character) still gets a hover target.
  span.textContent = text === '' ? '\u200b' : text;
  span.style.backgroundColor = shade(c.entropy, maxEntropy);
  span.dataset.entropy = String(c.entropy);
  signalsOf.set(span, c);
  return span;
}

function rows(c) {
  const out = [
    ['entropy', num(c.entropy)],
    ['top-1 prob', num(c.top1_prob)],
    ['norm scale', num(c.norm_scale)],
    ['unigram KL', c.unigram_kl === undefined ? 'n/a' : num(c.unigram_kl)],
    ['repeat', String(c.repeat)],
  ];
  for (const [a, v] of Object.entries(c.entropy_neurons ?? {})) out.push([`${a} (entropy)`, num(v)]);
  for (const [a, v] of Object.entries(c.frequency_neurons ?? {})) out.push([`${a} (frequency)`, num(v)]);
  if (interventionCount(c) > 0) out.push(['interventions', `${c.interventions.count} · ${c.interventions.digest}`]);
  return out;
}

export function attachTooltip(box, tip) {
  box.addEventListener('mouseover', (ev) => {
    const c = signalsOf.get(ev.target);
    if (!c) {
      tip.hidden = true;
      return;
    }
    const table = document.createElement('table');
    for (const [k, v] of rows(c)) {
      const tr = table.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = v;
    }
    tip.replaceChildren(table);
    tip.hidden = false;
    const r = ev.target.getBoundingClientRect();
    tip.style.left = `${Math.max(4, Math.min(r.left, window.innerWidth - tip.offsetWidth - 8))}px`;
    const below = r.bottom + 6;
    tip.style.top = `${below + tip.offsetHeight > window.innerHeight ? r.top - tip.offsetHeight - 6 : below}px`;
  });
  box.addEventListener('mouseout', () => (tip.hidden = true));
}
