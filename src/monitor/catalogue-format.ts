// The catalogue as text: the candidate tables `analyze` prints (markdown; plain ASCII on a terminal).

import type { Catalogue, CatalogueNeuron } from './catalogue.ts';

/** A markdown table of the candidates (renders as plain ASCII on a terminal too). */
export function formatCatalogueTable(c: Catalogue): string {
  const lines: string[] = [];
  const corpus = c.corpus
    ? `${c.corpus.description}, ${c.corpus.tokens} tokens${c.corpus.synthetic ? ' (SYNTHETIC: illustrative only)' : ''}`
    : 'none (weight metrics only)';
  lines.push(`Model ${c.model.id}, last layer ${c.layer} (${c.dMlp} neurons), k = ${c.k}, corpus: ${corpus}`);
  if (c.rank !== undefined) {
    lines.push(
      `Unembedding: rank ${c.rank}, exact null space ${c.nullity} (tolerance ${c.rankTolerance?.toExponential(1)} of the ` +
        `largest singular value), rho over the ${c.darkDim} darkest directions`,
    );
  }
  const byAddress = new Map(c.neurons.map((n) => [n.address, n]));
  const effectCells = (n: CatalogueNeuron) => {
    const v = n.verification;
    if (!v) return ['', '', '', ''];
    return [
      fmt(v.total.meanAbsDeltaLoss),
      fmt(v.direct.meanAbsDeltaLoss),
      fmt(v.total.meanDeltaEntropy),
      fmtFraction(v.normMediatedFraction),
    ];
  };
  const rule = c.entropyRanking ? `ranked by ${c.entropyRanking}` : 'by rho';
  lines.push('', `Entropy neuron candidates (${rule}; rho = share of w_out in the dark subspace)`, '');
  lines.push(
    ...table(
      ['neuron', 'rho', 'norm', 'LogitVar', 'freq score', 'TE abs dloss', 'DE abs dloss', 'TE dH', '1-DE/TE'],
      c.entropy.map((a) => {
        const n = byAddress.get(a)!;
        return [
          a,
          fmt(n.rho),
          fmt(n.norm),
          fmt(n.logitVar),
          n.freqScore === null ? '' : fmt(n.freqScore),
          ...effectCells(n),
        ];
      }),
    ),
  );
  lines.push('', 'Token-frequency neuron candidates (by |cos(W_U^T w_out, f)|)', '');
  if (c.frequency.length === 0) {
    lines.push('(none: no unigram counts were given)');
  } else {
    lines.push(
      ...table(
        ['neuron', 'freq score', 'rho', 'norm', 'TE abs dloss', 'freq-DE abs dloss', '1-FDE/TE'],
        c.frequency.map((a) => {
          const n = byAddress.get(a)!;
          const v = n.verification;
          return [
            a,
            fmt(n.freqScore!),
            fmt(n.rho),
            fmt(n.norm),
            v ? fmt(v.total.meanAbsDeltaLoss) : '',
            v?.frequencyDirect ? fmt(v.frequencyDirect.meanAbsDeltaLoss) : '',
            v?.frequencyMediatedFraction !== undefined ? fmtFraction(v.frequencyMediatedFraction) : '',
          ];
        }),
      ),
    );
  }
  if (c.baseline) {
    const b = c.baseline;
    lines.push(
      '',
      `Random baseline (${b.count} neurons, seed ${b.seed}): TE abs dloss ${fmt(b.total.meanAbsDeltaLoss)}, ` +
        `DE abs dloss ${fmt(b.direct.meanAbsDeltaLoss)}, 1-DE/TE ${fmtFraction(b.normMediatedFraction)}`,
    );
  }
  if (c.screen) lines.push(...screenLines(c));
  return lines.join('\n') + '\n';
}

function screenLines(c: Catalogue): string[] {
  const s = c.screen!;
  const address = (i: number) => `${c.layer}.${i}`;
  const found = new Set(s.found);
  const weight = new Set(c.entropy);
  const lines = [
    '',
    `Causal screen: all ${c.dMlp} neurons clamped to their ${Math.round(s.quantile * 100)}th-percentile activation on ` +
      `${s.positions} positions; entropy neurons found causally = largest norm-mediated dH, share >= ${s.minShare}`,
    '',
  ];
  lines.push(
    ...table(
      ['neuron', 'clamp', 'TE dH', 'DE dH', 'norm dH', 'norm share', 'rho', 'norm', 'flag'],
      s.verified.map((v) => {
        const n = c.neurons[v.index]!;
        const isFound = found.has(v.index);
        const isWeight = weight.has(n.address);
        const flag =
          isFound && !isWeight
            ? 'causal only'
            : !isFound && isWeight
              ? 'weights only'
              : isFound
                ? 'found'
                : '';
        return [
          n.address,
          fmt(v.clampTo),
          fmt(v.totalDeltaEntropy),
          fmt(v.directDeltaEntropy),
          fmt(v.normMediatedDeltaEntropy),
          fmtFraction(v.normMediatedShare),
          fmt(n.rho),
          fmt(n.norm),
          flag,
        ];
      }),
    ),
  );
  lines.push(
    '',
    `Entropy neurons found causally: ${s.found.map(address).join(', ') || '(none)'}`,
    `Weight candidates not found causally: ${s.weightsOnly.map(address).join(', ') || '(none)'}; ` +
      `found causally but not weight candidates: ${s.causalOnly.map(address).join(', ') || '(none)'}`,
  );
  return lines;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)];
}

function fmt(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  return a >= 1e-3 && a < 1e4 ? x.toFixed(4) : x.toExponential(2);
}

function fmtFraction(x: number | null): string {
  return x === null ? 'n/a' : x.toFixed(3);
}
