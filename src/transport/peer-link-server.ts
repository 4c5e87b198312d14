/**
 * The accepting side of peer links: one uWebSockets.js App with one WebSocket route. Works with
 * the native addon and with the package's JavaScript fallback (see ./uws.ts); the differences
 * that matter here are isolated in uwsPort() and hardenFallbackSocket().
 */
import type { TemplatedApp, WebSocket } from 'uWebSockets.js';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import {
  LinkCloseCode,
  PeerLinkEndpoint,
  closeReason,
  linkSettings,
  type PeerLink,
  type PeerLinkHandlers,
  type PeerLinkOptions,
  type SocketPort,
} from './peer-link-endpoint.js';
import { readTlsFiles, type TlsFiles } from './tls.js';
import { createUwsApp, loadUws, type UwsModule } from './uws.js';

export interface PeerLinkListenOptions extends PeerLinkOptions {
  /** 0 lets the kernel choose; read the chosen one from the result. */
  port: number;
  /** Default 127.0.0.1: listening on other interfaces is a deliberate choice. */
  host?: string;
  /** Default '/peer'. */
  path?: string;
  /** Seconds without traffic before uWS closes a link (it pings first). Default 32. */
  idleTimeoutSeconds?: number;
  /** Serve wss:// from these files; every dialer must then prove a certificate from the CA (see PeerLinkOptions.tls). */
  tlsFiles?: TlsFiles;
  /**
   * A peer passed the handshake. Called before any of its records is read; return the handlers
   * for this link (records arriving right behind the handshake go to them).
   */
  onLink(link: PeerLink): PeerLinkHandlers;
}

export interface PeerLinkServer {
  readonly port: number;
  /** True when the native uWS addon serves, false for its JavaScript fallback. */
  readonly native: boolean;
  /** Links currently connected (authenticated or still in the handshake). */
  connectionCount(): number;
  /** Stops accepting and closes every link with 1001 (going away). */
  close(): void;
}

/** What uWS reports in the close handler after it refused a message above maxPayloadLength. */
const UWS_TOO_BIG_MESSAGE = 'Received too big message';
/** Room in the socket's buffer beyond the high-water mark, so uWS never drops an accepted send. */
const BACKPRESSURE_SLACK_BYTES = 64 * 1024;
const WS_RECEIVE_LIMIT_ERROR = 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';

function uwsPort(ws: WebSocket<unknown>, native: boolean): SocketPort {
  return {
    // uWS returns 2 when it dropped the message (over maxBackpressure): nothing was sent.
    // The fallback queues the caller's bytes without copying them, so copy (the caller may reuse them).
    send: (bytes) => ws.send(native ? bytes : Buffer.from(bytes), true, false) !== 2,
    bufferedAmount: () => ws.getBufferedAmount(),
    end: (code, reason) => ws.end(code, reason),
    // The fallback has no drain event, so the endpoint polls there.
    watchWritable: () => native,
  };
}

interface FallbackSocket {
  internalWs?: { removeAllListeners(event: string): void; on(event: string, listener: (error: Error & { code?: string }) => void): void };
}

/**
 * The fallback rethrows every socket error except "payload too large" from an event listener,
 * which would crash the process on a malformed frame from a peer. Replace that listener.
 */
function hardenFallbackSocket(ws: WebSocket<unknown>, onTooLarge: () => void): void {
  const internal = (ws as unknown as FallbackSocket).internalWs;
  if (internal === undefined) return;
  internal.removeAllListeners('error');
  internal.on('error', (error) => {
    // ws closes the socket itself after an error, and the close handler reports it.
    if (error.code === WS_RECEIVE_LIMIT_ERROR) onTooLarge();
  });
}

function remoteAddressOf(ws: WebSocket<unknown>): string {
  try {
    return Buffer.from(ws.getRemoteAddressAsText()).toString('utf8');
  } catch {
    return 'unknown';
  }
}

/** The peer-link route on an App that may serve other routes too (see listenPeerLinks). */
export interface PeerLinkRoute {
  connectionCount(): number;
  /** Closes every link with 1001 (going away). */
  closeAll(): void;
}

export interface PeerLinkRouteOptions extends PeerLinkOptions {
  path: string;
  idleTimeoutSeconds?: number;
  /** Links open on this route at most (default 1024); more are closed at once with 1013. */
  connectionsMax?: number;
  /** Links still in their handshake at most (default 64): what an unauthenticated crowd can hold. */
  handshakesMax?: number;
  onLink(link: PeerLink): PeerLinkHandlers;
}

/** WebSocket close code 1013, "try again later": a route is at its cap of links or handshakes. */
export const TRY_AGAIN_LATER_CLOSE_CODE = 1013;
const CONNECTIONS_MAX_DEFAULT = 1024;
const HANDSHAKES_MAX_DEFAULT = 64;

/** Serves authenticated peer links on `options.path` of an existing uWS App. */
export function attachPeerLinkRoute(app: TemplatedApp, native: boolean, uws: UwsModule, options: PeerLinkRouteOptions): PeerLinkRoute {
  const settings = linkSettings(options);
  if (typeof options.onLink !== 'function') throw new DabbaError(ErrorCode.invalidArgument, 'onLink must be a function');
  const endpoints = new Map<WebSocket<unknown>, PeerLinkEndpoint>();
  const connectionsMax = options.connectionsMax ?? CONNECTIONS_MAX_DEFAULT;
  const handshakesMax = options.handshakesMax ?? HANDSHAKES_MAX_DEFAULT;
  let handshakes = 0;
  /** Closes a link the route has no room for, before any byte of it is read. */
  const turnAway = (ws: WebSocket<unknown>, detail: string): void => {
    settings.log({ level: 'warn', code: ErrorCode.overloaded, message: detail, nodeId: settings.nodeId, remoteNodeId: null, remoteAddress: remoteAddressOf(ws), closeCode: TRY_AGAIN_LATER_CLOSE_CODE });
    ws.end(TRY_AGAIN_LATER_CLOSE_CODE, closeReason(ErrorCode.overloaded, detail));
  };
  app.ws<unknown>(options.path, {
    compression: uws.DISABLED ?? 0, // Records are FlatBuffers batches: compressing costs CPU for little.
    maxPayloadLength: settings.receiveLimitBytes,
    maxBackpressure: settings.highWaterBytes + settings.receiveLimitBytes + BACKPRESSURE_SLACK_BYTES,
    closeOnBackpressureLimit: 0, // Typed as a number; 0 = never close on it (sends above the limit are refused instead).
    idleTimeout: options.idleTimeoutSeconds ?? 32,
    sendPingsAutomatically: true,
    open: (ws) => {
      if (endpoints.size >= connectionsMax) return turnAway(ws, `${options.path} has ${endpoints.size} links, its limit`);
      if (handshakes >= handshakesMax) return turnAway(ws, `${options.path} has ${handshakes} handshakes under way, its limit`);
      handshakes++;
      let handshaking = true;
      const handshakeOver = (): void => {
        if (handshaking) handshakes--;
        handshaking = false;
      };
      const endpoint = new PeerLinkEndpoint('server', settings, uwsPort(ws, native), remoteAddressOf(ws), {
        authenticated: (link) => {
          handshakeOver();
          return options.onLink(link);
        },
        closedBeforeOpen: handshakeOver,
      });
      endpoints.set(ws, endpoint);
      if (!native) hardenFallbackSocket(ws, () => endpoint.noteReceiveLimitExceeded());
      endpoint.start();
    },
    // The native ArrayBuffer is only valid during this call; the endpoint's contract says so too.
    message: (ws, message, isBinary) => endpoints.get(ws)?.receive(new Uint8Array(message), isBinary),
    drain: (ws) => endpoints.get(ws)?.handleDrain(),
    close: (ws, code, message) => {
      const endpoint = endpoints.get(ws);
      if (endpoint === undefined) return;
      endpoints.delete(ws);
      const reason = Buffer.from(message).toString('utf8');
      if (code === 1006 && reason === UWS_TOO_BIG_MESSAGE) endpoint.noteReceiveLimitExceeded();
      endpoint.socketClosed(code, reason);
    },
  });
  return {
    connectionCount: () => endpoints.size,
    closeAll() {
      for (const endpoint of [...endpoints.values()]) endpoint.close(LinkCloseCode.goingAway, 'server closing');
    },
  };
}

export function listenPeerLinks(options: PeerLinkListenOptions): Promise<PeerLinkServer> {
  const load = loadUws();
  const { uws, native } = load;
  const tls = options.tlsFiles === undefined ? (options.tls ?? null) : readTlsFiles(options.tlsFiles);
  const app = createUwsApp(load, options.tlsFiles ?? null);
  const route = attachPeerLinkRoute(app, native, uws, { ...options, tls, path: options.path ?? '/peer' });
  app.any('/*', (response) => {
    response.writeStatus('404 Not Found').end();
  });

  return new Promise((resolve, reject) => {
    app.listen(options.host ?? '127.0.0.1', options.port, (listenSocket) => {
      if (listenSocket === false) {
        reject(new DabbaError(ErrorCode.invalidArgument, `cannot listen on ${options.host ?? '127.0.0.1'}:${options.port}`));
        return;
      }
      let closed = false;
      resolve({
        port: uws.us_socket_local_port(listenSocket as never),
        native,
        connectionCount: route.connectionCount,
        close() {
          if (closed) return;
          closed = true;
          uws.us_listen_socket_close(listenSocket);
          route.closeAll();
        },
      });
    });
  });
}
