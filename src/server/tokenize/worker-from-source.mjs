// Worker entry used when running from the TypeScript sources (tsx, vitest): worker threads do
// not inherit the parent's loader hooks, so register tsx here before loading the real worker.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
