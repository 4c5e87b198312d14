/**
 * TLS for tests: a throwaway CA made with `openssl` (src/bench/peers/throwaway-ca.ts, shared with the
 * hosts-tls benchmark; openssl is installed as root when missing, else the error names
 * `apt-get install -y openssl`: never a silent skip), and HTTP requests that can present a client
 * certificate, which Node's fetch cannot.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createThrowawayCa, type ThrowawayCa } from '../../src/bench/peers/throwaway-ca.js';
import type { EtcdClusterTls } from '../../src/bench/peers/etcd-cluster.js';
import type { TlsFiles, TlsOptions } from '../../src/transport/tls.js';

export type TestCa = ThrowawayCa;

/** A CA with a host certificate for `addresses` (and 127.0.0.1) and a client certificate, in a temp dir. */
export function createTestCa(addresses: readonly string[] = [], name?: string): Promise<TestCa> {
  return createThrowawayCa({ addresses, ...(name === undefined ? {} : { name }) });
}

/** What `dabba serve --tls-*` takes: the host certificate. */
export function hostTlsFiles(ca: TestCa): TlsFiles {
  return { caFile: ca.caFile, certFile: ca.hostCertFile, keyFile: ca.hostKeyFile };
}

/** What connect({ tls }) takes: the CA and the client certificate (or none, `withCertificate` false). */
export function clientTls(ca: TestCa, withCertificate = true): TlsOptions {
  return withCertificate ? { ca: ca.read(ca.caFile), cert: ca.read(ca.clientCertFile), key: ca.read(ca.clientKeyFile) } : { ca: ca.read(ca.caFile) };
}

/** An etcd cluster over TLS, serving with the host certificate and checked with the client certificate. */
export function etcdTls(ca: TestCa): EtcdClusterTls {
  return { caFile: ca.caFile, certFile: ca.hostCertFile, keyFile: ca.hostKeyFile, clientCertFile: ca.clientCertFile, clientKeyFile: ca.clientKeyFile };
}

export interface HttpAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** An HTTP(S) request; over https:// with `tls`, presenting its certificate if it has one. */
export function requestUrl(url: string, init: { method?: string; body?: string | Buffer; tls?: TlsOptions; headers?: Record<string, string> } = {}): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const options = { method: init.method ?? 'GET', headers: init.headers ?? {}, timeout: 15_000, ...(init.tls ?? {}) };
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const outgoing = send(url, options, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    outgoing.on('timeout', () => outgoing.destroy(new Error(`${url} did not answer in 15 s`)));
    outgoing.on('error', reject);
    outgoing.end(init.body);
  });
}
