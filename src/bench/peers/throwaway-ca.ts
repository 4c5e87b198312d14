/**
 * A throwaway certificate authority for TLS tests and benchmarks, made with the `openssl` command
 * in a temp dir (as root, Debian's `openssl` package is installed if missing; otherwise the error
 * names `apt-get install -y openssl`). The same commands as README's "make a test CA" recipe:
 * EC P-256 keys, certificates valid for two days.
 *
 * - a CA;
 * - a host certificate for `addresses` (subjectAltName IP entries, and DNS:localhost) that allows
 *   serverAuth and clientAuth: a dabba host serves its port with it and dials other hosts with it,
 *   and an etcd member serves and peers with it;
 * - a client certificate (clientAuth only), for remote clients, HTTP requests and etcd clients.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ensureBinary } from './servers.js';

const execFileAsync = promisify(execFile);
const VALIDITY_DAYS = 2;

export interface ThrowawayCa {
  readonly directory: string;
  readonly caFile: string;
  readonly hostCertFile: string;
  readonly hostKeyFile: string;
  readonly clientCertFile: string;
  readonly clientKeyFile: string;
  /** A file's bytes (PEM). */
  read(file: string): Buffer;
  /** Deletes the directory. */
  remove(): void;
}

export async function createThrowawayCa(options: { addresses: readonly string[]; name?: string }): Promise<ThrowawayCa> {
  const openssl = await ensureBinary('openssl', 'openssl');
  const name = options.name ?? 'dabba test';
  const directory = mkdtempSync(join(tmpdir(), 'dabba-ca-'));
  const run = (args: string[]): Promise<unknown> => execFileAsync(openssl, args, { cwd: directory });
  const file = (base: string): string => join(directory, base);
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  try {
    await run(['req', '-x509', ...newKey, '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', String(VALIDITY_DAYS), '-subj', `/CN=${name} CA`]);
    const issue = async (base: string, subject: string, extensions: string[]): Promise<void> => {
      writeFileSync(file(`${base}.ext`), `${extensions.join('\n')}\n`);
      await run(['req', ...newKey, '-keyout', `${base}-key.pem`, '-out', `${base}.csr`, '-subj', `/CN=${subject}`]);
      await run(['x509', '-req', '-in', `${base}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-days', String(VALIDITY_DAYS), '-out', `${base}.pem`, '-extfile', `${base}.ext`]);
    };
    const names = [...new Set(['127.0.0.1', ...options.addresses])].map((address) => `IP:${address}`);
    await issue('host', `${name} host`, [`subjectAltName=${[...names, 'DNS:localhost'].join(',')}`, 'extendedKeyUsage=serverAuth,clientAuth', 'keyUsage=critical,digitalSignature']);
    await issue('client', `${name} client`, ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature']);
  } catch (error) {
    rmSync(directory, { recursive: true, force: true });
    throw new Error(`openssl could not make a test CA: ${(error as { stderr?: string }).stderr ?? (error as Error).message}`, { cause: error });
  }
  return {
    directory,
    caFile: file('ca.pem'),
    hostCertFile: file('host.pem'),
    hostKeyFile: file('host-key.pem'),
    clientCertFile: file('client.pem'),
    clientKeyFile: file('client-key.pem'),
    read: (path) => readFileSync(path),
    remove: () => rmSync(directory, { recursive: true, force: true }),
  };
}
