// A logger double that keeps what is logged (level, fields, message) for tests to assert on.
import type { FastifyBaseLogger } from 'fastify';

export function captureLog() {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at = (level: string) => (obj: Record<string, unknown> | string, msg?: string) =>
    lines.push(typeof obj === 'string' ? { level, obj: {}, msg: obj } : { level, obj, msg: msg ?? '' });
  const log = { info: at('info'), warn: at('warn'), error: at('error'), debug: at('debug'), child: () => log } as unknown as FastifyBaseLogger;
  return { log, lines };
}
