// The per-token interventions digest as documented (src/monitor/token-record.ts), computed here
// from its definition so tests compare the wire against an independent derivation.
import { createHash } from 'node:crypto';

export function digestOf(ids: string[]): string | null {
  if (ids.length === 0) return null;
  return createHash('sha256').update([...ids].sort().join('\n'), 'utf8').digest('hex').slice(0, 12);
}

/** The wire form of the interventions that acted on a token. */
export const touchedBy = (ids: string[]) => ({ count: ids.length, digest: digestOf(ids) });
