/**
 * Loads uWebSockets.js (the fast server side of links between hosts) and says whether the native
 * binary is in use. The npm republish we depend on silently falls back to a JavaScript
 * implementation when its binary cannot load; dabba reports which one it got instead of guessing.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export type UwsModule = typeof import('uWebSockets.js');

export interface UwsLoad {
  uws: UwsModule;
  /** True when the native addon is in use, false for the JavaScript fallback. */
  native: boolean;
  /** The addon file that a native load uses on this platform. */
  binary: string;
}

export function loadUws(): UwsLoad {
  const require = createRequire(import.meta.url);
  const uws = require('uWebSockets.js') as typeof import('uWebSockets.js');
  const packageDirectory = dirname(require.resolve('uWebSockets.js/package.json'));
  const binary = join(packageDirectory, 'binaries', `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`);
  let native = false;
  try {
    // Same resolved file, so the same cached module object when the package loaded it natively.
    native = require(binary) === uws;
  } catch {
    native = false;
  }
  return { uws, native, binary };
}
