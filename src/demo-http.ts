/**
 * `dabba demo --http [host:]port`: the demo's chain over HTTP while it runs, as a host serves its
 * own: GET / (the status page), GET /status (chain.status(), the page's data) and GET /metrics (the
 * Prometheus text of chain.metrics()). Plain node:http on loopback by default: it is a window on a
 * demo, not an API.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Chain } from './chain.js';
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from './status-page.js';

export interface DemoHttp {
  /** Where it listens, http://host:port. */
  url: string;
  close(): Promise<void>;
}

/** `[host:]port` (host 127.0.0.1 when left out), or a message that says what is wrong. */
export function parseListen(text: string): { host: string; port: number } | string {
  const match = /^(?:(.+):)?(\d{1,5})$/.exec(text);
  if (match === null || Number(match[2]) > 65535) return `--http must be [host:]port, got ${JSON.stringify(text)}`;
  return { host: match[1] ?? '127.0.0.1', port: Number(match[2]) };
}

export async function serveDemoHttp(chain: Chain, listen: { host: string; port: number }): Promise<DemoHttp> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown): void => void response.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (path !== '/' && path !== '/status' && path !== '/metrics') return json(404, { code: 'DABBA_ERR_NOT_FOUND', message: 'routes: / (the status page), /status, /metrics' });
    if (request.method !== 'GET') return json(405, { code: 'DABBA_ERR_INVALID_ARGUMENT', message: `${request.method} is not supported on ${path} (GET)` });
    if (path === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': STATUS_PAGE_CSP, 'cache-control': 'no-store' }).end(STATUS_PAGE_HTML);
      return;
    }
    if (path === '/status') return json(200, chain.status());
    chain.metrics().then(
      (text) => response.writeHead(200, { 'content-type': chain.metricsContentType }).end(text),
      (error: Error) => json(500, { code: 'DABBA_ERR_INTERNAL', message: error.message }),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  return {
    url: `http://${host}:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
