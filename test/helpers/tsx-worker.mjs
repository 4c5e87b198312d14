// Bootstrap for worker threads running TypeScript under tsx: `new Worker('peer.ts')` cannot load a
// .ts entry, so the worker starts here, registers tsx's ESM loader in its own thread, then imports
// the real entry named by `workerData.entryUrl` (a file: URL).
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.entryUrl);
