// Interventions as the API shows them, and the audit line written for every change: who changed
// which neuron when is what an operator needs after the fact, so it goes to the structured log
// ({audit: true, ...}) where log shipping can filter it.

import type { FastifyBaseLogger } from 'fastify';
import type { StoredIntervention } from '../../monitor/interventions.ts';
import type { InterventionView } from '../schemas.ts';

export function interventionView(iv: StoredIntervention): InterventionView {
  return {
    object: 'intervention',
    id: iv.id,
    neuron: iv.neuron,
    mode: iv.mode,
    value: iv.value,
    created_at: iv.createdAt,
    expires_at: iv.expiresAt,
    request_id: iv.requestId,
    neurons: iv.neurons ?? [iv.neuron],
    source: iv.source ?? 'api',
    origin: iv.origin ?? null,
  };
}

export type AuditAction = 'create' | 'delete' | 'expire' | 'restore' | 'persist';

/**
 * `source`: 'api' for the interventions routes, 'request' for the ones a generation request carried
 * (created when it starts, deleted when it ends), 'ttl' for expiry, 'file' for the --interventions
 * file, 'state' for the --state-dir (restored at start, saved at shutdown).
 */
export function auditIntervention(
  log: FastifyBaseLogger,
  action: AuditAction,
  iv: StoredIntervention,
  source: 'api' | 'request' | 'ttl' | 'file' | 'state',
  actorIp: string | null,
): void {
  log.info(
    { audit: true, action, source, intervention: interventionView(iv), actor_ip: actorIp },
    `intervention ${action}`,
  );
}
