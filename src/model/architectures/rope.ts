// Rotary position embedding frequencies, HF convention: rotation pair (i, i + rotaryDim/2)
// turns by position * invFreq[i] (rotate_half). Computed in float64 here; the graph stores them
// as float32, as HF does.

import type { RopeConfig } from '../config.ts';

/** invFreq[i] = theta^(-2i / rotaryDim), i < rotaryDim / 2, adjusted by the configured scaling. */
export function ropeInverseFrequencies(rope: RopeConfig): Float64Array {
  const half = rope.rotaryDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(rope.theta, (2 * i) / rope.rotaryDim);
  const s = rope.scaling;
  if (!s) return inv;
  if (s.type === 'linear') {
    // Linear scaling divides positions by `factor`, the same as dividing every frequency.
    return inv.map((f) => f / s.factor);
  }
  // Llama 3: keep short wavelengths, stretch long ones by `factor`, blend in between.
  const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / s.factor;
    const smooth =
      (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}
