/**
 * The HTTP API of a host, on the same uWebSockets.js server as its links:
 *
 *   PUT    /kv/:key   body = value        204 once the tail has acknowledged it
 *   GET    /kv/:key   200 value bytes (header x-dabba-version), 404 if absent
 *   DELETE /kv/:key                      204 once acknowledged
 *   PUT or DELETE with `If-Match: <version>`, PUT with `If-None-Match: *`: conditional (412 if the
 *   key was at another version, or present; the JSON error carries `currentVersion`)
 *   GET    /watch/:prefix?from=<version>&exact=1&encoding=utf8|base64
 *                      200 text/event-stream: the committed changes under the prefix (see serveWatch)
 *   GET    /status    200 JSON: members, roles, epoch, sequence numbers, throughput
 *   GET    /digest    200 JSON: this host's replica's store digest, keys and applied seq (checks)
 *   GET    /metrics   200 the host's figures in the Prometheus text format (src/metrics/registry.ts)
 *   GET    /          200 the status page (src/status-page.ts), with no token: it holds no data
 *
 * With a token (`--http-token-file`), every request needs `Authorization: Bearer <token>`: 401
 * otherwise, compared in constant time. With a metrics token (`--metrics-token-file`), /metrics
 * needs that one instead: a scraper holds no key to the data.
 *
 * Errors are JSON `{ "code": "DABBA_ERR_...", "message": "..." }`: 400 malformed request, 404
 * unknown route, 405 wrong method, 413 body too large, 503 while no chain can serve (no
 * configuration yet, or not acknowledged in time: the write may still commit), 507 a write to a
 * chain one of whose replicas has a full disk (DABBA_ERR_DISK_FULL: nothing was applied).
 *
 * A request whose framing is ambiguous (two Content-Length headers, or one that is not a decimal
 * number) is answered 400 DABBA_ERR_MALFORMED_REQUEST and its connection closed: a proxy in front
 * that read the framing differently would otherwise see a second request where we see a body.
 * Requests uWebSockets.js cannot parse at all it closes without an answer.
 *
 * Requests are served through a remote client of this very cluster (the same path as any
 * client's), so a request to any host reaches the head and the tail wherever they are.
 */
import type { HttpRequest, HttpResponse, TemplatedApp } from 'uWebSockets.js';
import { timingSafeEqual } from 'node:crypto';
import { DabbaError, ErrorCode, isDabbaError } from '../../native-free-core/errors.js';
import { connect, type RemoteClient } from '../client/remote-client.js';
import type { ChainOptions } from '../options.js';
import type { WriteConditions } from '../conditions.js';
import type { TlsOptions } from '../transport/tls.js';
import { watchSettings, type Watch, type WatchOptions } from '../watch.js';
import { METRICS_CONTENT_TYPE } from '../metrics/registry.js';
import { STATUS_PAGE_CSP, STATUS_PAGE_HTML } from '../status-page.js';

export interface HttpApiOptions {
  status(): unknown;
  /** Why /kv requests cannot be served now (no chain configured yet), or null. */
  unavailable(): string | null;
  /** Why a write of `key` is refused now (a replica of its chain has a full disk), or null. */
  writeRefusal?(key: Uint8Array): string | null;
  digest(): Promise<unknown>;
  secret: Buffer;
  hostUrl(): string;
  chain?: ChainOptions;
  keyBytesMax: number;
  valueBytesMax: number;
  /** When set, every request must carry `Authorization: Bearer <token>` (else 401). */
  token?: Buffer;
  /** GET /metrics: the host's figures in the Prometheus text format. */
  metrics(): Promise<string>;
  /** When set, GET /metrics needs `Authorization: Bearer <metricsToken>` instead of `token` (a scraper's own secret). */
  metricsToken?: Buffer;
  /** Each /kv request's time from its arrival to its answer, by method (GET, PUT, DELETE). */
  requestServed?(method: 'GET' | 'PUT' | 'DELETE', seconds: number): void;
  /** The host's own TLS material, for the client that serves requests (its host URL is wss://). */
  tls?: TlsOptions;
  log(level: 'info' | 'warn' | 'error', event: string, message: string): void;
}

export interface HttpApi {
  /** The client that serves /kv and /watch requests, once one connected (its figures are the host's HTTP clients'). */
  client(): RemoteClient | null;
  close(): void;
}

/** How long a request waits for the chain before it answers 503. */
const REQUEST_TIMEOUT_MS = 10_000;

class HttpError extends Error {
  constructor(
    readonly status: string,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function attachHttpApi(app: TemplatedApp, options: HttpApiOptions): HttpApi {
  const client = new LazyClient(options);
  const authorized = (response: HttpResponse, request: HttpRequest): boolean => checkRequest(response, request, options.token);

  app.get('/status', (response, request) => {
    if (!authorized(response, request)) return;
    sendJson(response, '200 OK', options.status());
  });

  app.get('/digest', (response, request) => {
    if (!authorized(response, request)) return;
    let aborted = false;
    response.onAborted(() => {
      aborted = true;
    });
    options.digest().then(
      (digest) => !aborted && sendJson(response, '200 OK', digest),
      (error: Error) => !aborted && sendJson(response, '503 Service Unavailable', { code: ErrorCode.unavailable, message: error.message }),
    );
  });

  // The status page holds no data (it reads /status, with the token from its fragment): no token.
  app.get('/', (response, request) => {
    if (!checkRequest(response, request, undefined)) return;
    response.cork(() =>
      response
        .writeStatus('200 OK')
        .writeHeader('content-type', 'text/html; charset=utf-8')
        .writeHeader('content-security-policy', STATUS_PAGE_CSP)
        .writeHeader('cache-control', 'no-store')
        .end(STATUS_PAGE_HTML),
    );
  });

  app.get('/metrics', (response, request) => {
    if (!checkRequest(response, request, options.metricsToken ?? options.token)) return;
    let aborted = false;
    response.onAborted(() => {
      aborted = true;
    });
    options.metrics().then(
      (text) => !aborted && response.cork(() => response.writeStatus('200 OK').writeHeader('content-type', METRICS_CONTENT_TYPE).end(text)),
      (error: Error) => !aborted && sendJson(response, '500 Internal Server Error', { code: 'DABBA_ERR_INTERNAL', message: error.message }),
    );
  });

  app.any('/kv/*', (response, request) => {
    if (!authorized(response, request)) return;
    serveKey(response, request, options, client);
  });

  app.get('/watch/*', (response, request) => {
    if (!authorized(response, request)) return;
    serveWatch(response, request, options, client);
  });

  app.any('/*', (response, request) => {
    if (!authorized(response, request)) return;
    sendJson(response, '404 Not Found', { code: ErrorCode.notFound, message: 'routes: /kv/:key (PUT, GET, DELETE), /watch/:prefix (GET), /status, /digest, /metrics, / (the status page)' });
  });

  return { client: () => client.current, close: () => client.close() };
}

/** The remote client requests are served through, made on first use (the cluster may not be configured yet). */
class LazyClient {
  private client: Promise<RemoteClient> | null = null;
  /** The client once connected. */
  current: RemoteClient | null = null;
  private closed = false;

  constructor(private readonly options: HttpApiOptions) {}

  get(): Promise<RemoteClient> {
    if (this.client === null) {
      const { options } = this;
      const client = connect({ hosts: [options.hostUrl()], secret: options.secret, ...(options.chain === undefined ? {} : { chain: options.chain }), connectTimeoutMs: REQUEST_TIMEOUT_MS, ...(options.tls === undefined ? {} : { tls: options.tls }) });
      this.client = client;
      client.then(
        (remote) => {
          if (this.client === client) this.current = remote;
        },
        () => {
          if (this.client === client) this.client = null; // Try again on the next request.
        },
      );
    }
    return this.client;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.client?.then((remote) => remote.close()).catch(() => undefined);
  }
}

/**
 * False (after answering) when the request cannot be served: its framing is ambiguous (400, and
 * the connection closes), or a token is required and it does not carry it (401).
 */
function checkRequest(response: HttpResponse, request: HttpRequest, token: Buffer | undefined): boolean {
  const malformed = ambiguousFraming(request);
  if (malformed !== null) {
    response.onData(() => undefined);
    sendJson(response, '400 Bad Request', { code: ErrorCode.malformedRequest, message: malformed }, true);
    return false;
  }
  if (token === undefined) return true;
  const given = Buffer.from(request.getHeader('authorization'), 'utf8');
  const expected = Buffer.concat([Buffer.from('Bearer ', 'utf8'), token]);
  if (given.length === expected.length && timingSafeEqual(given, expected)) return true;
  response.onData(() => undefined);
  sendJson(response, '401 Unauthorized', { code: ErrorCode.unauthenticated, message: 'this API needs Authorization: Bearer <token>' });
  return false;
}

/** Answers for one /kv request, once: nothing after the client has gone. */
interface Answer {
  respond(status: string, body: Uint8Array | string | null, headers?: Record<string, string>): void;
  fail(error: unknown): void;
}

/** `method`, when given, is the /kv request's: its time to the answer is reported (requestServed). */
function answerFor(response: HttpResponse, options: HttpApiOptions, method?: string): Answer {
  let aborted = false;
  response.onAborted(() => {
    aborted = true;
  });
  const arrivedAt = performance.now();
  const timed = method === 'GET' || method === 'PUT' || method === 'DELETE' ? method : null;
  const respond = (status: string, body: Uint8Array | string | null, headers: Record<string, string> = {}): void => {
    if (aborted) return;
    if (timed !== null) options.requestServed?.(timed, (performance.now() - arrivedAt) / 1000);
    response.cork(() => {
      response.writeStatus(status);
      for (const [name, value] of Object.entries(headers)) response.writeHeader(name, value);
      if (body === null) response.endWithoutBody();
      else response.end(body);
    });
  };
  const fail = (error: unknown): void => {
    if (error instanceof HttpError) return respond(error.status, JSON.stringify({ code: error.code, message: error.message }), JSON_HEADERS);
    if (isDabbaError(error, ErrorCode.rejected)) return respond('403 Forbidden', JSON.stringify({ code: error.code, message: error.message }), JSON_HEADERS);
    if (isDabbaError(error, ErrorCode.conditionFailed)) {
      return respond('412 Precondition Failed', JSON.stringify({ code: error.code, message: error.message, currentVersion: error.currentVersion ?? 0 }), JSON_HEADERS);
    }
    if (isDabbaError(error)) {
      const status = BAD_REQUEST_CODES.has(error.code) ? '400 Bad Request' : '503 Service Unavailable';
      return respond(status, JSON.stringify({ code: error.code, message: error.message }), JSON_HEADERS);
    }
    options.log('error', 'http-error', String((error as Error)?.stack ?? error));
    respond('500 Internal Server Error', JSON.stringify({ code: 'DABBA_ERR_INTERNAL', message: 'internal error' }), JSON_HEADERS);
  };
  return { respond, fail };
}

/** PUT, GET or DELETE /kv/:key, through the remote client. */
function serveKey(response: HttpResponse, request: HttpRequest, options: HttpApiOptions, client: LazyClient): void {
  const method = request.getMethod().toUpperCase();
  const answer = answerFor(response, options, method);
  let key: string;
  let conditions: WriteConditions | undefined;
  try {
    const reason = options.unavailable();
    if (reason !== null) throw new HttpError('503 Service Unavailable', ErrorCode.unavailable, reason);
    key = parseKey(request, options.keyBytesMax);
    conditions = parseConditions(request, method);
  } catch (error) {
    if (method === 'PUT') response.onData(() => undefined);
    return answer.fail(error);
  }
  if (method === 'GET') {
    withTimeout(client.get().then((remote) => remote.getVersioned(key))).then((entry) => {
      if (entry === undefined) answer.respond('404 Not Found', JSON.stringify({ code: ErrorCode.notFound, message: `no value for key ${JSON.stringify(key)}` }), JSON_HEADERS);
      else answer.respond('200 OK', entry.value, { 'content-type': 'application/octet-stream', 'x-dabba-version': String(entry.version) });
    }, answer.fail);
  } else if ((method === 'DELETE' || method === 'PUT') && diskRefusal(options, key) !== null) {
    if (method === 'PUT') response.onData(() => undefined);
    answer.fail(new HttpError('507 Insufficient Storage', ErrorCode.diskFull, diskRefusal(options, key)!));
  } else if (method === 'DELETE') {
    withTimeout(client.get().then((remote) => remote.delete(key, conditions))).then(() => answer.respond('204 No Content', null), answer.fail);
  } else if (method === 'PUT') {
    receiveValue(response, request, options.valueBytesMax, answer, (value) => {
      withTimeout(client.get().then((remote) => remote.put(key, value, conditions))).then(() => answer.respond('204 No Content', null), answer.fail);
    });
  } else {
    answer.fail(new HttpError('405 Method Not Allowed', ErrorCode.invalidArgument, `${method} is not supported on /kv/:key (PUT, GET, DELETE)`));
  }
}

/** A comment line sent this often keeps an idle event stream open through proxies. */
const WATCH_KEEPALIVE_MS = 15_000;

/**
 * GET /watch/:prefix as server-sent events: one event per committed change, `event: put` or
 * `event: delete`, its data JSON `{ key, value, version, chain }` (key and value in `encoding`:
 * utf8, the default, or base64; no value for a delete), its id the watch's position after it
 * (`chain:nextVersion` per chain, comma-separated). A client that reconnects with that id as
 * Last-Event-ID (as EventSource does) goes on without a gap; `from=<version>` starts at a version
 * (default: the changes committed after the request). A watch that falls behind the replicas'
 * history ends with `event: error` and data `{ code: "DABBA_ERR_WATCH_LAGGED", message,
 * resumeVersion, chain }`. The stream is written only as fast as the client reads it.
 */
function serveWatch(response: HttpResponse, request: HttpRequest, options: HttpApiOptions, client: LazyClient): void {
  let watchOptions: WatchOptions;
  let prefix: string;
  let encoding: BufferEncoding;
  try {
    const reason = options.unavailable();
    if (reason !== null) throw new HttpError('503 Service Unavailable', ErrorCode.unavailable, reason);
    prefix = parsePrefix(request, options.keyBytesMax);
    ({ watchOptions, encoding } = parseWatchQuery(request));
    watchSettings(prefix, watchOptions, options.keyBytesMax);
  } catch (error) {
    return answerFor(response, options).fail(error);
  }
  let aborted = false;
  let watch: Watch | null = null;
  let writable: (() => void) | null = null;
  let keepalive: NodeJS.Timeout | undefined;
  const stop = (): void => {
    aborted = true;
    clearInterval(keepalive);
    watch?.close();
    writable?.();
  };
  response.onAborted(stop);
  response.onWritable(() => {
    const resume = writable;
    writable = null;
    resume?.();
    return true;
  });
  const send = (text: string): Promise<void> | null => {
    let sent = false;
    response.cork(() => {
      sent = response.write(text);
    });
    return sent ? null : new Promise<void>((resolve) => (writable = resolve));
  };
  const streamChanges = async (remote: RemoteClient): Promise<void> => {
    if (aborted) return;
    watch = remote.watch(prefix, watchOptions);
    response.cork(() => {
      response.writeStatus('200 OK').writeHeader('content-type', 'text/event-stream').writeHeader('cache-control', 'no-store');
      response.write(': watching\n\n');
    });
    keepalive = setInterval(() => {
      if (!aborted) response.cork(() => response.write(': keepalive\n\n'));
    }, WATCH_KEEPALIVE_MS);
    try {
      for await (const change of watch) {
        if (aborted) return;
        const data: Record<string, unknown> = { key: change.key.toString(encoding), version: change.version, chain: change.chain };
        if (change.value !== undefined) data.value = change.value.toString(encoding);
        const position = Object.entries(watch.position()).map(([chain, version]) => `${chain}:${version}`).join(',');
        const backpressure = send(`id: ${position}\nevent: ${change.op}\ndata: ${JSON.stringify(data)}\n\n`);
        if (backpressure !== null) await backpressure;
      }
    } catch (error) {
      if (aborted) return;
      const failure = isDabbaError(error) ? { code: error.code, message: error.message, resumeVersion: error.resumeVersion, chain: error.chain } : { code: 'DABBA_ERR_INTERNAL', message: String(error) };
      send(`event: error\ndata: ${JSON.stringify(failure)}\n\n`);
    }
    if (!aborted) {
      clearInterval(keepalive);
      aborted = true;
      response.cork(() => response.end());
    }
  };
  withTimeout(client.get()).then(
    (remote) => streamChanges(remote).catch((error: unknown) => options.log('error', 'http-error', String((error as Error)?.stack ?? error))),
    (error: unknown) => {
      if (aborted) return;
      aborted = true;
      const status = isDabbaError(error) ? '503 Service Unavailable' : '500 Internal Server Error';
      sendJson(response, status, { code: isDabbaError(error) ? error.code : 'DABBA_ERR_INTERNAL', message: String((error as Error)?.message ?? error) });
    },
  );
}

/** The prefix of /watch/:prefix (may be empty: every key). */
function parsePrefix(request: HttpRequest, keyBytesMax: number): string {
  let prefix: string;
  try {
    prefix = decodeURIComponent(request.getUrl().slice('/watch/'.length));
  } catch {
    throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'the prefix is not valid percent-encoded UTF-8');
  }
  if (Buffer.byteLength(prefix) > keyBytesMax) throw new HttpError('400 Bad Request', ErrorCode.keyTooLarge, `a prefix is at most ${keyBytesMax} bytes`);
  return prefix;
}

/** `from`, `exact` and `encoding` from the query, and Last-Event-ID (which wins over `from`). */
function parseWatchQuery(request: HttpRequest): { watchOptions: WatchOptions; encoding: BufferEncoding } {
  const query = new URLSearchParams(request.getQuery() ?? '');
  const watchOptions: WatchOptions = {};
  const from = query.get('from');
  if (from !== null) {
    if (!/^[0-9]{1,15}$/.test(from)) throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, `from takes a version, got ${JSON.stringify(from.slice(0, 40))}`);
    watchOptions.fromVersion = Number(from);
  }
  const lastEventId = request.getHeader('last-event-id');
  if (lastEventId !== '') {
    const position: Record<number, number> = {};
    for (const part of lastEventId.split(',')) {
      const match = /^([0-9]{1,4}):([0-9]{1,15})$/.exec(part);
      if (match === null) throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, `Last-Event-ID takes chain:version pairs, got ${JSON.stringify(lastEventId.slice(0, 80))}`);
      position[Number(match[1])] = Number(match[2]);
    }
    watchOptions.fromVersion = position;
  }
  const exact = query.get('exact');
  if (exact !== null && exact !== '1' && exact !== 'true') throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'exact takes 1 or true');
  if (exact !== null) watchOptions.exact = true;
  const encoding = query.get('encoding') ?? 'utf8';
  if (encoding !== 'utf8' && encoding !== 'base64') throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'encoding takes utf8 or base64');
  return { watchOptions, encoding };
}

/**
 * `If-Match: <version>` (PUT, DELETE: the key must be at that version, as x-dabba-version gave it;
 * quoted as an ETag or not) and `If-None-Match: *` (PUT: the key must be absent). Read before the
 * handler returns: uWebSockets.js's request is gone after.
 */
function parseConditions(request: HttpRequest, method: string): WriteConditions | undefined {
  const ifMatch = request.getHeader('if-match');
  const ifNoneMatch = request.getHeader('if-none-match');
  if (ifMatch === '' && ifNoneMatch === '') return undefined;
  if (method !== 'PUT' && method !== 'DELETE') throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'If-Match and If-None-Match apply to PUT and DELETE');
  if (ifMatch !== '' && ifNoneMatch !== '') throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'give If-Match or If-None-Match, not both');
  if (ifNoneMatch !== '') {
    if (ifNoneMatch !== '*' || method !== 'PUT') throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'If-None-Match takes only *, on PUT (put if absent)');
    return { ifAbsent: true };
  }
  const version = /^"?([1-9][0-9]{0,15})"?$/.exec(ifMatch);
  if (version === null || !Number.isSafeInteger(Number(version[1]))) throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, `If-Match takes a version (x-dabba-version), got ${JSON.stringify(ifMatch.slice(0, 40))}`);
  return { ifVersion: Number(version[1]) };
}

function diskRefusal(options: HttpApiOptions, key: string): string | null {
  return options.writeRefusal?.(Buffer.from(key)) ?? null;
}

/** Reads a PUT's body up to `valueBytesMax` bytes (413 beyond, declared or not), then hands it on. */
function receiveValue(response: HttpResponse, request: HttpRequest, valueBytesMax: number, answer: Answer, onValue: (value: Buffer) => void): void {
  const declared = Number(request.getHeader('content-length') || '0');
  if (declared > valueBytesMax) {
    response.onData(() => undefined);
    return answer.fail(new HttpError('413 Payload Too Large', ErrorCode.valueTooLarge, `a value is at most ${valueBytesMax} bytes (got ${declared})`));
  }
  const chunks: Buffer[] = [];
  let length = 0;
  let refused = false;
  response.onData((chunk, isLast) => {
    if (refused) return;
    length += chunk.byteLength;
    if (length > valueBytesMax) {
      refused = true;
      return answer.fail(new HttpError('413 Payload Too Large', ErrorCode.valueTooLarge, `a value is at most ${valueBytesMax} bytes`));
    }
    // uWS reuses the chunk's memory after this call: copy it.
    chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
    if (isLast) onValue(Buffer.concat(chunks, length));
  });
}

const JSON_HEADERS = { 'content-type': 'application/json' };
const BAD_REQUEST_CODES = new Set<string>([ErrorCode.invalidArgument, ErrorCode.keyEmpty, ErrorCode.keyTooLarge, ErrorCode.valueTooLarge]);

function sendJson(response: HttpResponse, status: string, body: unknown, closeConnection = false): void {
  response.cork(() => {
    response.writeStatus(status).writeHeader('content-type', 'application/json').end(JSON.stringify(body), closeConnection);
  });
}

/** Why the request's body framing is ambiguous, or null if it is not. */
function ambiguousFraming(request: HttpRequest): string | null {
  let contentLengths = 0;
  let reason: string | null = null;
  request.forEach((name, value) => {
    if (name !== 'content-length') return;
    contentLengths++;
    if (!/^[0-9]{1,15}$/.test(value)) reason = `Content-Length ${JSON.stringify(value.slice(0, 32))} is not a decimal number`;
  });
  if (contentLengths > 1) return `${contentLengths} Content-Length headers: a request has at most one`;
  return reason;
}

function parseKey(request: HttpRequest, keyBytesMax: number): string {
  const raw = request.getUrl().slice('/kv/'.length);
  if (raw.length === 0) throw new HttpError('400 Bad Request', ErrorCode.keyEmpty, 'the key must not be empty: /kv/:key');
  let key: string;
  try {
    key = decodeURIComponent(raw);
  } catch {
    throw new HttpError('400 Bad Request', ErrorCode.invalidArgument, 'the key is not valid percent-encoded UTF-8');
  }
  if (Buffer.byteLength(key) > keyBytesMax) throw new HttpError('400 Bad Request', ErrorCode.keyTooLarge, `a key is at most ${keyBytesMax} bytes`);
  return key;
}

function withTimeout<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new DabbaError(ErrorCode.timeout, `the chain did not answer within ${REQUEST_TIMEOUT_MS} ms; a write may still commit`)),
      REQUEST_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
