/** The pure core: usable without Node built-ins (browsers, simulators, other runtimes). */
export { assert, AssertionError } from './assert.js';
export { DabbaError, ErrorCode, isDabbaError } from './errors.js';
export { SpscRing } from './ring.js';
export { Store } from './store.js';
export { ChainNode } from './chain/node.js';
export type { ChainNodeOptions, Ready, ReceiveResult, Role, AdvanceReport } from './chain/node.js';
export { InflightLog } from './chain/inflight-log.js';
export * from './wire/codec.js';
