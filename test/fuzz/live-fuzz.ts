/**
 * A live fuzzer for running hosts (`dabba serve`): hostile and broken input on every door a host
 * opens, by class, each counted with what the host made of it. The caller (test/live-fuzz.test.ts,
 * or `npm run fuzz -- --live`) starts the hosts, runs a well-behaved client beside this, and checks
 * afterwards that no host died, no replica was lost, memory stayed bounded and every write the
 * well-behaved client had acknowledged reads back.
 *
 * Classes (each a function below):
 *   handshake       wrong secrets, the client secret on /peer, the peer secret with an identity etcd
 *                   does not hold, a replayed handshake answer, garbage and text instead of a handshake
 *   crowd           more unfinished handshakes than a route allows at once
 *   client frames   an authenticated client sending mutated frames of every kind, frames of kinds a
 *                   client never sends, values above the limit (a 4.19 MB one among them), a frame
 *                   of exactly 4,194,300 bytes, and more than a link's record limit
 *   takeover        another client's id, with no token or a wrong one
 *   http            bytes that are not HTTP, ambiguous framing, bodies over the limit, odd methods
 *
 * Every attempt must end in a refusal the host chose (a coded close, an HTTP error) or, for input
 * that happens to be well-formed and allowed, in acceptance: nothing may crash or hang a host.
 */
import { generateKeyPairSync } from 'node:crypto';
import { connect as connectTcp } from 'node:net';
import WebSocket from 'ws';
import { isDabbaError, ErrorCode } from '../../native-free-core/errors.js';
import { clientNodeId } from '../../native-free-core/wire/client-node-id.js';
import { decodeClusterView } from '../../native-free-core/wire/cluster-view.js';
import { frameKind, MessageKind, Op, WriteBatchEncoder } from '../../native-free-core/wire/codec.js';
import { connectPeerLink, type PeerLink } from '../../src/transport/peer-link.js';
import { clientMac, decodeChallenge, encodeResponse, newNonce } from '../../src/transport/peer-link-handshake.js';
import { mutate, Random } from './frame-mutator.js';
import { seedFrames } from './seed-frames.js';

export interface LiveTarget {
  /** ws:// base URLs of the hosts. */
  urls: string[];
  clientSecret: Buffer;
  peerSecret: Buffer;
  /** A replica id that is a member now (the impostor claims it). */
  memberReplicaId: number;
  /** Largest frame a host's link takes (its data ring's record limit). */
  linkRecordBytesMax: number;
  valueBytesMax: number;
}

export interface LiveFuzzOptions {
  seed: number;
  /** Mutated frames sent by authenticated clients. */
  frames: number;
  /** Attempts per handshake attack. */
  handshakes: number;
  /** Told how long each phase took. */
  onPhase?(name: string, elapsedMs: number): void;
}

/** What happened to one class of input. */
export interface ClassCounts {
  sent: number;
  /** Refused by the host: a coded close, a failed handshake, an HTTP error status. */
  refused: number;
  /** Taken: well-formed input a client may send. */
  accepted: number;
}

export type LiveFuzzReport = Record<string, ClassCounts>;

const HANDSHAKE_TIMEOUT_MS = 5000;
/** How long a frame that must be refused may take to be (a few MiB cross a loaded machine slowly). */
const REFUSAL_WAIT_MS = 3000;

export async function runLiveFuzz(target: LiveTarget, options: LiveFuzzOptions): Promise<LiveFuzzReport> {
  const report: LiveFuzzReport = {};
  const random = new Random(options.seed);
  const phases: Array<[string, () => Promise<void>]> = [
    ['handshakes', () => handshakeAttacks(target, options, report)],
    ['crowd', () => crowd(target, report)],
    ['client frames', () => clientFrames(target, options, random, report)],
    ['takeover', () => takeover(target, report)],
    ['http', () => httpAttacks(target, random, report)],
  ];
  for (const [name, phase] of phases) {
    const started = performance.now();
    await phase();
    options.onPhase?.(name, performance.now() - started);
  }
  return report;
}

function count(report: LiveFuzzReport, name: string, outcome: 'refused' | 'accepted'): void {
  const counts = (report[name] ??= { sent: 0, refused: 0, accepted: 0 });
  counts.sent++;
  counts[outcome]++;
}

// ---------------------------------------------------------------------------------------------
// Handshakes

async function handshakeAttacks(target: LiveTarget, options: LiveFuzzOptions, report: LiveFuzzReport): Promise<void> {
  const url = target.urls[0]!;
  const wrongSecret = Buffer.from('not-a-secret-of-this-cluster-at-all');
  const impostorKey = generateKeyPairSync('ed25519').privateKey;
  const attempts: Array<[string, () => Promise<PeerLink>]> = [
    ['handshake: wrong secret on /client', () => dial(`${url}/client`, wrongSecret, 'client')],
    ['handshake: wrong secret on /peer', () => dial(`${url}/peer`, wrongSecret, `replica:${target.memberReplicaId}`)],
    // A client's credential is not a replica's: it cannot link as one (finding 4).
    ['handshake: client secret on /peer', () => dial(`${url}/peer`, target.clientSecret, `replica:${target.memberReplicaId}`)],
    // The peer secret alone, without the identity key the replica's host registered in etcd.
    ['handshake: peer secret, unregistered identity', () => dial(`${url}/peer`, target.peerSecret, `replica:${target.memberReplicaId}`, impostorKey)],
    ['handshake: peer secret, no identity', () => dial(`${url}/peer`, target.peerSecret, `replica:${target.memberReplicaId}`)],
  ];
  for (const [name, attempt] of attempts) {
    for (let index = 0; index < options.handshakes; index++) {
      const outcome = await attempt().then(
        (link) => {
          link.close(1000, 'fuzz');
          return 'accepted' as const;
        },
        (error: unknown) => (isDabbaError(error, ErrorCode.unauthenticated) ? ('refused' as const) : ('accepted' as const)),
      );
      count(report, name, outcome);
    }
  }
  for (let index = 0; index < options.handshakes; index++) count(report, 'handshake: replayed answer', await replayedAnswer(`${url}/client`, target.clientSecret));
  for (let index = 0; index < options.handshakes; index++) {
    for (const path of ['/client', '/peer']) {
      count(report, `handshake: garbage on ${path}`, await rawSocket(`${url}${path}`, (socket) => socket.send(Buffer.from(`garbage ${index} `.repeat(1 + index))), true));
      count(report, `handshake: text on ${path}`, await rawSocket(`${url}${path}`, (socket) => socket.send('hello?'), true));
    }
  }
}

function dial(url: string, secret: Buffer, nodeId: string, identityKey?: ReturnType<typeof generateKeyPairSync>['privateKey']): Promise<PeerLink> {
  return connectPeerLink({
    url,
    secret,
    nodeId,
    maxRecordBytes: 64 * 1024 * 1024,
    validate: () => null,
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    ...(identityKey === undefined ? {} : { identityKey }),
    onRecord: () => undefined,
  });
}

/**
 * A valid answer to one connection's challenge, sent on a second connection (whose challenge has
 * another nonce): the host must refuse it.
 */
async function replayedAnswer(url: string, secret: Buffer): Promise<'refused' | 'accepted'> {
  const first = new WebSocket(url, { perMessageDeflate: false });
  first.on('error', () => undefined);
  const [challenge] = (await next<[Buffer]>(first, "message"));
  const serverNonce = decodeChallenge(challenge);
  first.terminate();
  if (typeof serverNonce === 'string') throw new Error(`no challenge from ${url}: ${serverNonce}`);
  const clientNonce = newNonce();
  const answer = encodeResponse(clientMac(secret, serverNonce, clientNonce, 'client'), clientNonce, null, 'client');
  return rawSocket(url, (socket) => socket.send(answer), true);
}

/**
 * Opens a raw WebSocket, waits for the host's challenge, calls `act`, and reports whether the host
 * closed the connection on its own ('refused') or left it open for 2 s ('accepted').
 */
async function rawSocket(url: string, act: (socket: WebSocket) => void, afterChallenge: boolean): Promise<'refused' | 'accepted'> {
  const socket = new WebSocket(url, { perMessageDeflate: false });
  socket.on('error', () => undefined);
  const closed = next(socket, 'close').then(() => 'refused' as const);
  if (afterChallenge) await Promise.race([next(socket, 'message'), closed]);
  else await Promise.race([next(socket, 'open'), closed]);
  if (socket.readyState === WebSocket.OPEN) act(socket);
  const outcome = await Promise.race([closed, delay(2000).then(() => 'accepted' as const)]);
  socket.terminate();
  return outcome;
}

/** More sockets than a route takes unfinished handshakes: the rest are turned away at once (1013). */
async function crowd(target: LiveTarget, report: LiveFuzzReport): Promise<void> {
  const sockets: WebSocket[] = [];
  const closes: Array<Promise<number>> = [];
  for (let index = 0; index < 80; index++) {
    const socket = new WebSocket(`${target.urls[0]!}/client`, { perMessageDeflate: false });
    socket.on('error', () => undefined);
    sockets.push(socket);
    closes.push(Promise.race([next(socket, 'close').then(([code]) => code as number), delay(1500).then(() => 0)]));
  }
  const codes = await Promise.all(closes);
  for (const code of codes) count(report, 'crowd: idle handshakes', code === 1013 ? 'refused' : 'accepted');
  for (const socket of sockets) socket.terminate();
}

// ---------------------------------------------------------------------------------------------
// An authenticated client

/** A client id of our own, with its token: resuming it costs no id from etcd per connection. */
async function introduce(url: string, secret: Buffer): Promise<{ clientId: number; token: string }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${url} sent no view`)), 10_000);
    void connectPeerLink({
      url: `${url}/client`,
      secret,
      nodeId: 'client',
      maxRecordBytes: 1 << 20,
      validate: () => null,
      onRecord: (bytes) => {
        if (frameKind(bytes) !== MessageKind.clusterView) return;
        const view = decodeClusterView(bytes);
        if (typeof view === 'string' || view.clientId === 0) return;
        clearTimeout(timer);
        resolve({ clientId: view.clientId, token: view.clientToken });
      },
    }).then((link) => setTimeout(() => link.close(1000, 'introduced'), 50), reject);
  });
}

/** One link of our client that reports when the host closes it. */
class ClientLink {
  private link: PeerLink | null = null;
  private closedBy: number | null = null;

  constructor(
    private readonly url: string,
    private readonly secret: Buffer,
    private readonly nodeId: string,
  ) {}

  /**
   * Sends one frame; 'refused' if the host closes the link within `waitMs` (it closes at once over
   * a frame it refuses, but a large frame takes a while to arrive).
   */
  async send(frame: Uint8Array, waitMs = 20): Promise<'refused' | 'accepted'> {
    if (this.link === null || !this.link.isOpen) await this.open();
    const link = this.link!;
    this.closedBy = null;
    while (!link.trySend(frame)) {
      if (!link.isOpen) break;
      await delay(1);
    }
    // The host closes a link over a refused frame at once; give it a moment to say so.
    await Promise.race([this.closing, delay(waitMs)]);
    return this.closedBy === null ? 'accepted' : 'refused';
  }

  private closing: Promise<void> = Promise.resolve();

  private async open(): Promise<void> {
    let onClosed: () => void = () => undefined;
    this.closing = new Promise<void>((resolve) => (onClosed = resolve));
    this.link = await connectPeerLink({
      url: `${this.url}/client`,
      secret: this.secret,
      nodeId: this.nodeId,
      maxRecordBytes: 64 * 1024 * 1024,
      validate: () => null,
      onRecord: () => undefined,
      onClose: (code) => {
        this.closedBy = code;
        onClosed();
      },
    });
  }

  close(): void {
    this.link?.close(1000, 'fuzz over');
  }
}

async function clientFrames(target: LiveTarget, options: LiveFuzzOptions, random: Random, report: LiveFuzzReport): Promise<void> {
  const head = target.urls[0]!;
  const { clientId, token } = await introduce(head, target.clientSecret);
  // Two links per host, each sending its share of the frames in turn: a refused frame closes its
  // link, and the next one on it waits for a new handshake, so links in parallel keep the run short.
  const links = [...target.urls, ...target.urls].map((url) => new ClientLink(url, target.clientSecret, clientNodeId(clientId, token)));
  const seeds = seedFrames();
  const frames = Array.from({ length: options.frames }, () => {
    const seed = random.pick(seeds);
    return mutate(seed.bytes, seed.layout, random.pick(seeds).bytes, random);
  });
  try {
    await Promise.all(
      links.map(async (link, linkIndex) => {
        for (let index = linkIndex; index < frames.length; index += links.length) count(report, 'client: mutated frames', await link.send(frames[index]!));
      }),
    );
    // Frames a client never sends: the host closes the link.
    const clientKinds: MessageKind[] = [MessageKind.writeBatch, MessageKind.readBatch, MessageKind.watchRequest];
    for (const seed of seeds.filter((candidate) => !clientKinds.includes(candidate.kind))) {
      count(report, 'client: frames of kinds a client never sends', await links[0]!.send(seed.bytes, REFUSAL_WAIT_MS));
    }
    // Values above the limit (finding 2: a 4.19 MB value reached the read reply's assertion).
    for (const valueBytes of [target.valueBytesMax + 1, 4_190_000]) {
      count(report, 'client: a value above valueBytesMax', await links[0]!.send(bigWrite(clientId, valueBytes), REFUSAL_WAIT_MS));
    }
    // Finding 3: a frame of 4,194,300 bytes (the link took ringBytes/2, the ring 8 bytes less).
    count(report, 'client: a 4,194,300-byte frame', await links[0]!.send(paddedFrame(4_194_300), REFUSAL_WAIT_MS));
    count(report, 'client: a frame above the link limit', await links[0]!.send(paddedFrame(target.linkRecordBytesMax + 1), REFUSAL_WAIT_MS));
  } finally {
    for (const link of links) link.close();
  }
}

/** A well-formed write batch of one put with a value of `valueBytes` bytes. */
function bigWrite(clientId: number, valueBytes: number): Uint8Array {
  const encoder = new WriteBatchEncoder({ writesMax: 1, payloadBytesMax: valueBytes + 16 });
  encoder.begin(clientId, 1_000_000_000);
  encoder.payload.set(Buffer.from('big-value'), 0);
  encoder.addRecord(Op.Put, 9, valueBytes);
  return encoder.finish().slice();
}

/** A write-batch-shaped frame of exactly `length` bytes: one record, the rest of it payload. */
function paddedFrame(length: number): Uint8Array {
  const frame = new Uint8Array(length);
  const base = bigWrite(1, 16);
  frame.set(base.subarray(0, Math.min(base.length, length)));
  return frame;
}

/** Another client's id, with no token, another id's token, or a forged one (finding 5). */
async function takeover(target: LiveTarget, report: LiveFuzzReport): Promise<void> {
  const victim = await introduce(target.urls[0]!, target.clientSecret);
  const other = await introduce(target.urls[0]!, target.clientSecret);
  for (const nodeId of [`client:${victim.clientId}`, clientNodeId(victim.clientId, other.token), clientNodeId(victim.clientId, 'A'.repeat(22))]) {
    const outcome = await dial(`${target.urls[0]!}/client`, target.clientSecret, nodeId).then(
      async (link) => {
        // The handshake proves the secret; the id is checked right after: a wrong token closes it.
        const closed = await Promise.race([new Promise<boolean>((resolve) => waitClosed(link, resolve)), delay(2000).then(() => false)]);
        link.close(1000, 'fuzz');
        return closed ? ('refused' as const) : ('accepted' as const);
      },
      () => 'refused' as const,
    );
    count(report, 'takeover: another client\'s id', outcome);
  }
}

function waitClosed(link: PeerLink, resolve: (closed: boolean) => void): void {
  const poll = (): void => {
    if (!link.isOpen) resolve(true);
    else setTimeout(poll, 10);
  };
  poll();
}

// ---------------------------------------------------------------------------------------------
// HTTP

async function httpAttacks(target: LiveTarget, random: Random, report: LiveFuzzReport): Promise<void> {
  const url = new URL(target.urls[0]!.replace(/^ws/, 'http'));
  const requests: Array<[string, string]> = [
    ['http: not HTTP at all', 'HELLO THERE\r\n\r\n'],
    ['http: two Content-Length headers', 'PUT /kv/smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabcGET /kv/smuggled HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['http: Transfer-Encoding and Content-Length', 'PUT /kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n'],
    ['http: a huge header', `GET /kv/a HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(200_000)}\r\n\r\n`],
    ['http: a declared body over the value limit', `PUT /kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: ${target.valueBytesMax + 1}\r\n\r\n`],
    ['http: an unknown method', 'BREW /kv/coffee HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['http: a key that is not percent-encoded UTF-8', 'GET /kv/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n'],
  ];
  for (let index = 0; index < 20; index++) {
    // Ended as a request's head would be, so the server sees it whole (no waiting for more).
    const junk = Buffer.from(Array.from({ length: 1 + random.below(400) }, () => random.below(256)));
    requests.push(['http: random bytes', `${junk.toString('latin1')}\r\n\r\n`]);
  }
  const answers = await Promise.all(requests.map(([, text]) => rawHttp(url.hostname, Number(url.port), text)));
  requests.forEach(([name], index) => {
    const answer = answers[index]!;
    // An error status, or the connection closed on bytes that are not HTTP: both are refusals.
    count(report, name, answer === null || /^HTTP\/1\.1 [45]\d\d /.test(answer) ? 'refused' : 'accepted');
  });
}

/** Sends raw bytes; resolves with the answer's first line and headers, or null if closed without one. */
async function rawHttp(host: string, port: number, text: string): Promise<string | null> {
  const socket = connectTcp(port, host);
  socket.on('error', () => undefined);
  let answer = '';
  let answered: () => void = () => undefined;
  const firstAnswer = new Promise<void>((resolve) => (answered = resolve));
  socket.setEncoding('latin1').on('data', (chunk: string) => {
    answer += chunk;
    answered();
  });
  socket.write(text, 'latin1');
  // An answer (the status line is all that counts), or the host closing: whichever comes first.
  await Promise.race([firstAnswer, next(socket, 'close'), delay(2000)]);
  socket.destroy();
  return answer === '' ? null : answer;
}

/** Resolves on the emitter's next `event` (unlike events.once, an 'error' meanwhile does not reject). */
function next<T extends unknown[]>(emitter: { once(event: string, listener: (...args: T) => void): unknown }, event: string): Promise<T> {
  return new Promise((resolve) => emitter.once(event, (...args: T) => resolve(args)));
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
