/**
 * `dabba demo --http [host:]port`: the demo's chain over HTTP while it runs, as a host serves its
 * own: GET /metrics (the Prometheus text of chain.metrics()). Plain node:http on loopback by
 * default: it is a window on a demo, not an API.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Chain } from './chain.js';

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
    if (path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DABBA_ERR_NOT_FOUND', message: 'routes: /metrics' }));
      return;
    }
    if (request.method !== 'GET') {
      response.writeHead(405, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DABBA_ERR_INVALID_ARGUMENT', message: `${request.method} is not supported on /metrics (GET)` }));
      return;
    }
    chain.metrics().then(
      (text) => response.writeHead(200, { 'content-type': chain.metricsContentType }).end(text),
      (error: Error) => response.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'DABBA_ERR_INTERNAL', message: error.message })),
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
