/**
 * The connecting side of a peer link, on the `ws` package (uWebSockets.js has no client). With
 * `tls` it dials wss:// with the CA and the certificate given (see ./tls.ts).
 */
import WebSocket from 'ws';
import { DabbaError, ErrorCode } from '../../native-free-core/errors.js';
import {
  LinkCloseCode,
  PeerLinkEndpoint,
  linkSettings,
  type PeerLink,
  type PeerLinkHandlers,
  type PeerLinkOptions,
  type SocketPort,
} from './peer-link-endpoint.js';
import { dialOptions } from './tls.js';

/**
 * The handlers are given here, not set on the link later: records can arrive right behind the
 * handshake, before the returned promise's continuation runs.
 */
export interface PeerLinkConnectOptions extends PeerLinkOptions, PeerLinkHandlers {
  /** e.g. ws://10.0.0.2:7400/peer, or wss:// with `tls` */
  url: string;
}

const WS_RECEIVE_LIMIT_ERROR = 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
/**
 * node:tls error codes that mean a certificate did not verify, on either side: ours refused by the
 * host (an alert), or the host's refused by us. Not a network failure, and retrying will not help.
 */
const CERTIFICATE_ERROR = /CERT|UNABLE_TO_|ALERT_UNKNOWN_CA|ALERT_ACCESS_DENIED/;

function zeroMask(mask: Uint8Array): void {
  mask.fill(0);
}

function asBytes(data: WebSocket.RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  return data instanceof ArrayBuffer ? new Uint8Array(data) : data;
}

/** Resolves once both sides have proven they hold the secret; rejects with a DabbaError otherwise. */
export function connectPeerLink(options: PeerLinkConnectOptions): Promise<PeerLink> {
  const settings = linkSettings(options);
  if (typeof options.onRecord !== 'function') throw new DabbaError(ErrorCode.invalidArgument, 'onRecord must be a function');
  const handlers: PeerLinkHandlers = { onRecord: options.onRecord };
  if (options.onWritable) handlers.onWritable = options.onWritable;
  if (options.onClose) handlers.onClose = options.onClose;
  if (settings.tls !== null && !options.url.startsWith('wss://')) {
    // A rejection, not a throw: the URL may come from a view or the host table at run time (a
    // cluster where some hosts serve TLS and some do not), and callers retry a failed dial.
    return Promise.reject(new DabbaError(ErrorCode.invalidArgument, `TLS material is given, so the URL must be wss://, got ${options.url}`));
  }

  const socket = new WebSocket(options.url, {
    ...(settings.tls === null ? {} : dialOptions(settings.tls)),
    perMessageDeflate: false,
    maxPayload: settings.receiveLimitBytes,
    handshakeTimeout: settings.handshakeTimeoutMs,
    // An all-zero masking key, which ws takes as "do not XOR" (its JavaScript XOR costs ~1 us per
    // KiB, the whole link's budget). Masking protects intermediaries from pages in a browser that
    // forge frames; a peer link is a program talking to a host that authenticated it, directly.
    generateMask: zeroMask,
  });

  return new Promise((resolve, reject) => {
    let lastError: Error | null = null;
    // ws has no drain event. A send that takes the buffer above the high-water mark carries a
    // callback that runs once it is written out, which is when a refused producer may retry.
    let pendingFlushes = 0;
    const onFlushed = (): void => {
      pendingFlushes--;
      endpoint.handleDrain();
    };
    const port: SocketPort = {
      send(bytes, retained) {
        if (socket.readyState !== WebSocket.OPEN) return false;
        // Unmasked, ws queues the caller's bytes by reference if the socket is busy: unless the
        // caller keeps them (retained), send a copy (a memcpy, far cheaper than masking).
        const copy = retained ? bytes : Buffer.from(bytes);
        if (socket.bufferedAmount + bytes.length > settings.highWaterBytes) {
          pendingFlushes++;
          socket.send(copy, onFlushed);
        } else {
          socket.send(copy);
        }
        return true;
      },
      bufferedAmount: () => socket.bufferedAmount,
      end(code, reason) {
        if (socket.readyState === WebSocket.OPEN) socket.close(code, reason);
        else socket.terminate();
      },
      watchWritable: () => pendingFlushes > 0,
    };
    const endpoint = new PeerLinkEndpoint('client', settings, port, options.url, {
      authenticated(link) {
        resolve(link);
        return handlers;
      },
      closedBeforeOpen(code, reason) {
        const refused = code === LinkCloseCode.unauthenticated || CERTIFICATE_ERROR.test((lastError as { code?: string } | null)?.code ?? '');
        const errorCode = refused ? ErrorCode.unauthenticated : ErrorCode.linkClosed;
        const detail = lastError !== null ? lastError.message : `closed with ${code}${reason === '' ? '' : ` (${reason})`}`;
        reject(new DabbaError(errorCode, `peer link to ${options.url} was not established: ${detail}`, { cause: lastError ?? undefined }));
      },
    });

    socket.on('open', () => endpoint.start());
    socket.on('message', (data, isBinary) => endpoint.receive(asBytes(data), isBinary));
    socket.on('error', (error: Error & { code?: string }) => {
      // Without this listener a socket error would be an uncaught exception; ws closes the socket after it.
      if (error.code === WS_RECEIVE_LIMIT_ERROR) endpoint.noteReceiveLimitExceeded();
      else lastError = error;
    });
    socket.on('close', (code, reason) => endpoint.socketClosed(code, reason.toString('utf8')));
  });
}
