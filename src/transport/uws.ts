/**
 * Loads uWebSockets.js (the fast server side of links between hosts) and says whether the native
 * binary is in use. The npm republish we depend on silently falls back to a JavaScript
 * implementation when its binary cannot load; dabba reports which one it got instead of guessing.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { TemplatedApp } from 'uWebSockets.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import type { TlsFiles } from './tls.js';

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

/**
 * A uWS App, or with `tls` an SSLApp serving those files. With a CA file, uWS asks TLS clients for
 * a certificate and refuses one the CA did not issue, but admits a client that sends none (see
 * ./certificate-proof.ts for what makes links require one). The JavaScript fallback has no SSLApp.
 */
export function createUwsApp(load: UwsLoad, tls: TlsFiles | null): TemplatedApp {
  if (tls === null) return load.uws.App();
  if (!load.native || typeof load.uws.SSLApp !== 'function') {
    throw new DabbaError(ErrorCode.invalidArgument, `TLS needs the native uWebSockets.js addon (${load.binary}); its JavaScript fallback cannot serve TLS`);
  }
  try {
    return load.uws.SSLApp({ cert_file_name: tls.certFile, key_file_name: tls.keyFile, ca_file_name: tls.caFile });
  } catch (error) {
    // uWS says only "App construction failed": files were checked before (./tls.ts readTlsFiles).
    throw new DabbaError(ErrorCode.invalidArgument, `uWebSockets.js could not serve TLS from ${tls.certFile}, ${tls.keyFile} and ${tls.caFile}: ${(error as Error).message}`, { cause: error });
  }
}
