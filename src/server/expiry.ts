// Interventions expire at their deadline, not at the next request that happens to look: the
// registry prunes lazily (on list/get/activeFor), so with no traffic an expired intervention would
// stay in the gauge and its `expired` event and audit line would come late. One timer, armed for
// the earliest deadline, makes the registry look then.

import type { InterventionRegistry, StoredIntervention } from '../monitor/interventions.ts';

/** setTimeout fires at once for delays above 2^31-1 ms (24.8 days); longer waits re-arm. */
const MAX_TIMER_MS = 2_147_483_647;
/** A deadline already passed that the registry did not prune runs on another clock: poll. */
const REPOLL_MS = 250;

/** Arms the expiry timer; returns a function that stops it. */
export function expireOnTime(registry: InterventionRegistry): () => void {
  let timer: NodeJS.Timeout | null = null;
  let due = Infinity;
  const arm = (): void => {
    if (timer) clearTimeout(timer);
    timer = null;
    // list() prunes what is due, emitting `expired` for each.
    const deadlines = registry.list().map((iv) => (iv.expiresAt ? Date.parse(iv.expiresAt) : Infinity));
    due = Math.min(Infinity, ...deadlines);
    if (due === Infinity) return;
    const wait = due - Date.now();
    timer = setTimeout(arm, wait > 0 ? Math.min(wait + 1, MAX_TIMER_MS) : REPOLL_MS);
    timer.unref();
  };
  const created = (iv: StoredIntervention) => {
    if (iv.expiresAt !== null && Date.parse(iv.expiresAt) < due) queueMicrotask(arm);
  };
  registry.on('created', created);
  arm();
  return () => {
    registry.off('created', created);
    if (timer) clearTimeout(timer);
    timer = null;
  };
}
