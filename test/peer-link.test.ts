/**
 * Peer links over real sockets on 127.0.0.1: the uWS server runs in a child process
 * (test/helpers/peer-link-server.ts), the ws client here. Each suite runs against the native uWS
 * addon and against its JavaScript fallback (UWS_USE_FALLBACK=1).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { ErrorCode, isDabbaError } from '../native-free-core/errors.js';
import { HelloEncoder } from '../native-free-core/wire/codec.js';
import {
  connectPeerLink,
  frameEnvelopeValidator,
  type PeerLink,
  type PeerLinkConnectOptions,
} from '../src/transport/peer-link.js';
import { RECORD_BYTES, recordProblem, recordSeq, writeRecord } from './helpers/peer-records.js';

const SECRET = randomBytes(32);
const MAX_RECORD_BYTES = 4096;
const BULK_RECORDS = 200_000;
const ACK_EVERY = 1000; // as in the helper
/**
 * Small marks, so the bulk tests really hit them: loopback kernel buffers take megabytes, and
 * with the default 1 MiB mark a sender may never see the socket's own buffer fill.
 */
const HIGH_WATER_BYTES = 32 * 1024;
const LOW_WATER_BYTES = 8 * 1024;

type Line = Record<string, unknown>;

/** The server child and its stdout, one JSON object per line. */
class ServerProcess {
  readonly lines: Line[] = [];
  private readonly waiters = new Set<{ match(line: Line): boolean; resolve(line: Line): void; reject(error: Error): void }>();
  private exited = false;

  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (text) => {
      if (!text.startsWith('{')) return; // e.g. the fallback's own banner
      const line = JSON.parse(text) as Line;
      this.lines.push(line);
      for (const waiter of this.waiters) if (waiter.match(line)) waiter.resolve(line);
    });
    child.on('exit', (code, signal) => {
      this.exited = true;
      for (const waiter of this.waiters) waiter.reject(new Error(`server child exited (${code ?? signal})`));
    });
  }

  static async start(fallback: boolean): Promise<ServerProcess> {
    const env: NodeJS.ProcessEnv = { ...process.env, PEER_SECRET: SECRET.toString('hex'), PEER_MAX_RECORD_BYTES: String(MAX_RECORD_BYTES),
      PEER_HIGH_WATER_BYTES: String(HIGH_WATER_BYTES),
      PEER_LOW_WATER_BYTES: String(LOW_WATER_BYTES),
    };
    if (fallback) env.UWS_USE_FALLBACK = '1';
    else delete env.UWS_USE_FALLBACK;
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/peer-link-server.ts'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    return new ServerProcess(child);
  }

  waitFor(match: (line: Line) => boolean): Promise<Line> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    if (this.exited) return Promise.reject(new Error('server child exited'));
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (line: Line) => {
          this.waiters.delete(waiter);
          resolve(line);
        },
        reject: (error: Error) => {
          this.waiters.delete(waiter);
          reject(error);
        },
      };
      this.waiters.add(waiter);
    });
  }

  logsWith(code: string): Line[] {
    return this.lines.filter((line) => (line.log as { code?: string } | undefined)?.code === code);
  }

  linkIds(): unknown[] {
    return this.lines.filter((line) => 'link' in line).map((line) => line.link);
  }

  async stop(): Promise<void> {
    if (this.exited || this.child.pid === undefined) return;
    const exit = once(this.child, 'exit');
    process.kill(this.child.pid, 'SIGTERM');
    await exit;
  }
}

async function withServer(fallback: boolean, body: (server: ServerProcess, port: number) => Promise<void>): Promise<void> {
  const server = await ServerProcess.start(fallback);
  try {
    const ready = await server.waitFor((line) => line.ready === true);
    assert.equal(ready.native, !fallback, `uWS ${fallback ? 'fallback' : 'native addon'} expected in the server child`);
    await body(server, ready.port as number);
  } finally {
    await server.stop();
  }
}

function deferred<T>(): { promise: Promise<T>; resolve(value: T): void; reject(error: Error): void } {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function connect(port: number, options: Partial<PeerLinkConnectOptions> & Pick<PeerLinkConnectOptions, 'nodeId'>): Promise<PeerLink> {
  return connectPeerLink({
    url: `ws://127.0.0.1:${port}/peer`,
    secret: SECRET,
    maxRecordBytes: MAX_RECORD_BYTES,
    validate: recordProblem,
    highWaterBytes: HIGH_WATER_BYTES,
    lowWaterBytes: LOW_WATER_BYTES,
    onRecord: () => {},
    ...options,
  });
}

interface PushResult {
  refusals: number;
  writables: number;
  seconds: number;
}

/** Sends records 1..count with backpressure and waits for the server's ack of the last one. */
async function push(port: number, nodeId: string, count: number): Promise<PushResult> {
  const acked = deferred<void>();
  const scratch = new Uint8Array(RECORD_BYTES);
  let next = 1;
  let refusals = 0;
  let writables = 0;
  let link: PeerLink | null = null;
  const pump = (): void => {
    while (next <= count) {
      if (!link!.trySend(writeRecord(scratch, next))) {
        refusals++;
        return;
      }
      next++;
    }
  };
  link = await connect(port, {
    nodeId,
    onRecord: (bytes) => {
      if (recordSeq(bytes) === count) acked.resolve();
    },
    onWritable: () => {
      writables++;
      pump();
    },
    onClose: (code, reason) => acked.reject(new Error(`link closed before the last ack: ${code} ${reason}`)),
  });
  const started = performance.now();
  pump();
  await acked.promise;
  const seconds = (performance.now() - started) / 1000;
  link.close();
  return { refusals, writables, seconds };
}

test('frameEnvelopeValidator accepts a dabba frame and gives a reason for garbage', () => {
  const validate = frameEnvelopeValidator();
  assert.equal(validate(new HelloEncoder().encode({ epoch: 1, replicaId: 2, appliedSeq: 3 })), null);
  assert.equal(typeof validate(new Uint8Array([1, 2, 3])), 'string');
  assert.equal(typeof validate(randomBytes(100)), 'string');
});

test('a client refuses a server that cannot prove it holds the secret', async () => {
  const fake = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(fake, 'listening');
  try {
    fake.on('connection', (socket) => {
      socket.send(Buffer.concat([Buffer.from('DBL1C', 'latin1'), randomBytes(32)]));
      socket.on('message', () => socket.send(Buffer.concat([Buffer.from('DBL1P', 'latin1'), randomBytes(32), Buffer.from('fake')])));
    });
    const { port } = fake.address() as { port: number };
    await assert.rejects(connect(port, { nodeId: 'client' }), (error) => isDabbaError(error, ErrorCode.unauthenticated));
  } finally {
    fake.close();
  }
});

for (const fallback of [false, true]) {
  describe(`peer links, uWS ${fallback ? 'JavaScript fallback' : 'native addon'} on the server`, () => {
    test(`${BULK_RECORDS} records of ${RECORD_BYTES} B, client to server, arrive complete and in order`, async (t) => {
      await withServer(fallback, async (_server, port) => {
        const result = await push(port, 'push-bulk', BULK_RECORDS);
        // Loopback kernel buffers absorb megabytes, so whether trySend ever refuses here depends on
        // scheduling; completion proves every refusal was followed by onWritable.
        assert.ok(result.refusals === 0 || result.writables > 0);
        t.diagnostic(
          `client->server: ${Math.round(BULK_RECORDS / result.seconds)} records/s ` +
            `(${result.seconds.toFixed(2)} s, ${result.refusals} refusals, ${result.writables} onWritable)`,
        );
      });
    });

    test(`${BULK_RECORDS} records, server to client, arrive complete and in order`, async (t) => {
      await withServer(fallback, async (server, port) => {
        const all = deferred<void>();
        let expected = 1;
        const started = performance.now();
        const link = await connect(port, {
          nodeId: `pull-${BULK_RECORDS}`,
          onRecord: (bytes) => {
            const seq = recordSeq(bytes);
            if (seq !== expected) all.reject(new Error(`record ${seq} arrived, expected ${expected}`));
            if (++expected > BULK_RECORDS) all.resolve();
          },
          onClose: (code, reason) => all.reject(new Error(`closed early: ${code} ${reason}`)),
        });
        await all.promise;
        const seconds = (performance.now() - started) / 1000;
        const done = (await server.waitFor((line) => 'pullDone' in line)).pullDone as { refusals: number; writables: number };
        assert.ok(done.refusals === 0 || done.writables > 0, 'each refusal on the uWS side was followed by onWritable');
        link.close();
        t.diagnostic(`server->client: ${Math.round(BULK_RECORDS / seconds)} records/s (${done.refusals} refusals, ${done.writables} onWritable on the uWS side)`);
      });
    });

    test('a client with the wrong secret, or one that skips the handshake, is refused with 4001', async () => {
      await withServer(fallback, async (server, port) => {
        let delivered = 0;
        await assert.rejects(
          connect(port, { nodeId: 'push-intruder', secret: randomBytes(32), onRecord: () => delivered++ }),
          (error) => isDabbaError(error, ErrorCode.unauthenticated) && /4001/.test((error as Error).message),
        );
        assert.equal(delivered, 0);

        // A raw client that answers the challenge with a record.
        const raw = new WebSocket(`ws://127.0.0.1:${port}/peer`, { perMessageDeflate: false, maxPayload: MAX_RECORD_BYTES });
        raw.once('message', () => raw.send(writeRecord(new Uint8Array(RECORD_BYTES), 1)));
        const [code, reason] = (await once(raw, 'close')) as [number, Buffer];
        assert.equal(code, 4001);
        assert.match(reason.toString(), /^DABBA_ERR_UNAUTHENTICATED: /);

        // The server still serves, and no refused peer ever became a link.
        await push(port, 'push-after-intruders', ACK_EVERY);
        // The child's stdout and the link's acks are two pipes: the ack may be read first.
        await server.waitFor((line) => line.link === 'push-after-intruders');
        assert.deepEqual(server.linkIds(), ['push-after-intruders']);
        const refusals = server.logsWith(ErrorCode.unauthenticated);
        assert.equal(refusals.length, 2);
        assert.match(JSON.stringify(refusals[0]), /push-intruder.*does not hold this route.s secret/);
        assert.ok(refusals.every((line) => (line.log as { closeCode: number }).closeCode === 4001));
      });
    });

    test('a record that fails validation closes that link with 4002 and a reason; the server keeps serving', async () => {
      await withServer(fallback, async (server, port) => {
        const closed = deferred<[number, string]>();
        const link = await connect(port, { nodeId: 'push-garbage', onClose: (code, reason) => closed.resolve([code, reason]) });
        assert.equal(link.remoteNodeId, 'test-server');
        assert.ok(link.trySend(randomBytes(RECORD_BYTES)));
        const [code, reason] = await closed.promise;
        assert.equal(code, 4002);
        assert.match(reason, /^DABBA_ERR_MALFORMED_FRAME: bad magic/);
        assert.equal(link.isOpen, false);
        assert.equal(link.trySend(writeRecord(new Uint8Array(RECORD_BYTES), 1)), false, 'a closed link refuses');
        await push(port, 'push-after-garbage', ACK_EVERY);
        await server.waitFor((line) => line.link === 'push-after-garbage'); // stdout is ordered: the log came before it
        assert.equal(server.logsWith(ErrorCode.malformedFrame).length, 1);
      });
    });

    test('a record larger than maxRecordBytes is refused without crashing either side', async () => {
      await withServer(fallback, async (server, port) => {
        // Locally: trySend throws a coded error and the link stays usable.
        const local = await connect(port, { nodeId: 'push-local-limit' });
        assert.throws(() => local.trySend(new Uint8Array(MAX_RECORD_BYTES + 1)), (error) => isDabbaError(error, ErrorCode.recordTooLarge));
        assert.ok(local.isOpen);
        local.close();

        // Remotely: a peer configured with a larger limit sends one; the server drops that link.
        const closed = deferred<number>();
        const big = await connect(port, {
          nodeId: 'push-too-big',
          maxRecordBytes: 4 * MAX_RECORD_BYTES,
          onClose: (code) => closed.resolve(code),
        });
        assert.ok(big.trySend(new Uint8Array(2 * MAX_RECORD_BYTES)));
        const code = await closed.promise;
        assert.notEqual(code, 1000, 'not a normal close');
        const refusal = await server.waitFor((line) => (line.log as { code?: string } | undefined)?.code === ErrorCode.recordTooLarge);
        assert.equal((refusal.log as { closeCode: number }).closeCode, 4002);
        await push(port, 'push-after-too-big', ACK_EVERY);
      });
    });
  });
}
