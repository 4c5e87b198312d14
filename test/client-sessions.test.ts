/**
 * Read routing on a host: many clients' read batches share one replica, their request ids overlap
 * (every client counts from 1), and the replica may split a batch's answers over several replies or
 * ignore batches (it stopped being the tail). Seeded random schedules check that every reply reaches
 * the client whose reads it answers, with that client's own request ids, and nobody else. Also what
 * a host refuses from a client: ids without their token, batches damaged on the way.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReadBatchEncoder, ReadBatchView, ReadReplyEncoder, ReadReplyView, ReadStatus, WriteBatchEncoder } from '../native-free-core/wire/codec.js';
import { nativeCrc32 } from '../workers/native-crc32.js';
import { ClientTokens } from '../src/host/client-tokens.js';
import { clientNodeId } from '../native-free-core/wire/client-node-id.js';
import { decodeClusterView } from '../native-free-core/wire/cluster-view.js';
import { ClientSessions, type ClientSessionsOptions } from '../src/host/client-sessions.js';
import type { PeerLink, PeerLinkHandlers } from '../src/transport/peer-link.js';
import { mulberry32 } from './helpers/prng.js';

interface FakeClient {
  link: PeerLink;
  handlers: PeerLinkHandlers;
  received: Uint8Array[];
  closed: boolean;
}

function fakeLink(remoteNodeId: string, received: Uint8Array[], onClose: () => void): PeerLink {
  return {
    localNodeId: 'host:test',
    remoteNodeId,
    remoteAddress: 'test',
    isOpen: true,
    trySend: (bytes) => {
      received.push(bytes.slice());
      return true;
    },
    bufferedAmount: () => 0,
    close: onClose,
  };
}

/** A host's client sessions, always the head and serving reads, with `overrides` on the defaults. */
function sessionsWith(overrides: Partial<ClientSessionsOptions>): ClientSessions {
  return new ClientSessions({
    path: '/client',
    secret: Buffer.from('the-client-secret-of-this-cluster'),
    tokens: new ClientTokens(Buffer.from('the-peer-secret-of-this-cluster')),
    nodeId: 'host:test',
    maxRecordBytes: 1 << 20,
    recordLimits: { keyBytesMax: 1024, valueBytesMax: 512 * 1024 },
    connectionInboundBytesMax: 1 << 20,
    allocateClientId: () => Promise.resolve(7),
    view: () => ({ epoch: 1, members: [{ replicaId: 1, url: 'ws://127.0.0.1:1' }], joining: null, chains: 1 }),
    isHead: () => true,
    isServingReads: () => true,
    offerBatch: () => true,
    offerReads: () => true,
    log: () => undefined,
    ...overrides,
  });
}

const encoder = new ReadBatchEncoder({ readsMax: 64, keyBytesMax: 64 });
function readBatch(firstRequestId: number, keys: string[]): Uint8Array {
  encoder.begin(firstRequestId);
  for (const key of keys) encoder.addRead(Buffer.from(key), 0, key.length);
  return encoder.finish(1).slice();
}

test('read replies reach only their own client, with its request ids, across splits and ignored batches', () => {
  for (let seed = 1; seed <= 50; seed++) {
    const random = mulberry32(seed);
    const toReplica: Uint8Array[] = [];
    const tokens = new ClientTokens(Buffer.alloc(16, 1));
    const sessions = sessionsWith({
      secret: Buffer.alloc(16),
      tokens,
      allocateClientId: () => Promise.reject(new Error('not used')),
      offerReads: (frame) => {
        toReplica.push(frame.slice());
        return true;
      },
    });
    const clients: FakeClient[] = [];
    for (let index = 0; index < 3; index++) {
      const received: Uint8Array[] = [];
      const client: FakeClient = { link: null as unknown as PeerLink, handlers: null as unknown as PeerLinkHandlers, received, closed: false };
      client.link = fakeLink(clientNodeId(index + 1, tokens.issue(index + 1)), received, () => (client.closed = true));
      client.handlers = (sessions as unknown as { onLink(link: PeerLink): PeerLinkHandlers }).onLink(client.link);
      received.length = 0; // The view sent on connect.
      clients.push(client);
    }
    // Each client sends read batches with its own ids from 1; a key names its client and request.
    const nextId = [1, 1, 1];
    const sent: Array<{ client: number; firstRequestId: number; keys: string[] }> = [];
    for (let batch = 0; batch < 30; batch++) {
      const client = Math.floor(random() * 3);
      const count = 1 + Math.floor(random() * 8);
      const keys = Array.from({ length: count }, (_, index) => `c${client}-r${nextId[client]! + index}`);
      sent.push({ client, firstRequestId: nextId[client]!, keys });
      clients[client]!.handlers.onRecord(readBatch(nextId[client]!, keys));
      nextId[client]! += count;
    }
    assert.equal(toReplica.length, sent.length);
    // The replica answers in order: some batches in one reply, some split in two, some not at all.
    const view = new ReadBatchView();
    const expected = new Map<number, Map<number, string>>(); // client -> request id -> value
    toReplica.forEach((frame, index) => {
      assert.equal(view.open(frame), null);
      const fate = random();
      if (fate < 0.15) return; // Ignored: it stopped being the tail.
      const split = fate < 0.4 && view.count > 1 ? 1 + Math.floor(random() * (view.count - 1)) : view.count;
      for (const [from, to] of [[0, split], [split, view.count]] as const) {
        if (from === to) continue;
        const reply = new ReadReplyEncoder(64, 4096);
        reply.begin(view.firstRequestId + from);
        for (let read = from; read < to; read++) {
          const value = Buffer.from(`value of ${sent[index]!.keys[read]}`);
          reply.addFound(value, 0, value.length, 1);
          const owner = sent[index]!.client;
          if (!expected.has(owner)) expected.set(owner, new Map());
          expected.get(owner)!.set(sent[index]!.firstRequestId + read, `value of ${sent[index]!.keys[read]}`);
        }
        sessions.deliverReadReply(reply.finish(1, 1));
      }
    });
    const replyView = new ReadReplyView();
    clients.forEach((client, index) => {
      const got = new Map<number, string>();
      for (const frame of client.received) {
        assert.equal(replyView.open(frame), null);
        for (let read = 0; read < replyView.count; read++) {
          assert.equal(replyView.statusAt(read), ReadStatus.Found);
          const result = replyView.resultAt(read);
          const start = replyView.payloadPosition + result.valueOffset();
          got.set(replyView.firstRequestId + read, Buffer.from(replyView.bytes.subarray(start, start + result.valueLength())).toString());
        }
      }
      assert.deepEqual(got, expected.get(index) ?? new Map(), `seed ${seed}: client ${index + 1} got replies that are not its own`);
      assert.equal(client.closed, false);
    });
  }
});

test('a client id is bound to the token issued with it: knowing the id is not enough to take it over', async () => {
  const tokens = new ClientTokens(Buffer.from('the-peer-secret-of-this-cluster'));
  const sessions = sessionsWith({ tokens });
  const connectAs = (nodeId: string): { closed: () => boolean; received: Uint8Array[] } => {
    const received: Uint8Array[] = [];
    let closed = false;
    (sessions as unknown as { onLink(link: PeerLink): PeerLinkHandlers }).onLink(fakeLink(nodeId, received, () => (closed = true)));
    return { closed: () => closed, received };
  };
  // A new client is given id 7 and its token in its first view.
  const owner = connectAs('client');
  await new Promise((resolve) => setImmediate(resolve));
  const view = decodeClusterView(owner.received[0]!);
  assert.ok(typeof view !== 'string');
  assert.equal(view.clientId, 7);
  assert.equal(tokens.verify(7, view.clientToken), true);
  // Anyone else naming id 7, with no token, another client's token or a forged one, is refused.
  const attempts = [connectAs('client:7'), connectAs(clientNodeId(7, tokens.issue(8))), connectAs(clientNodeId(7, 'A'.repeat(22)))];
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(attempts.map((attempt) => attempt.closed()), [true, true, true]);
  assert.equal(sessions.count, 1);
  // The owner reconnecting with its token resumes its id.
  const resumed = connectAs(clientNodeId(7, view.clientToken));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(resumed.closed(), false);
  assert.equal(sessions.count, 2);
});

test('a write batch whose bytes do not match its checksum is refused and its link closed (the client resends on its next link)', async () => {
  const offered: Uint8Array[] = [];
  const sessions = sessionsWith({
    offerBatch: (frame) => {
      offered.push(frame.slice());
      return true;
    },
  });
  let closedWith: string | null = null;
  const link: PeerLink = { ...fakeLink('client', [], () => undefined), close: (_code?: number, reason?: string) => void (closedWith = reason ?? '') };
  const handlers = (sessions as unknown as { onLink(link: PeerLink): PeerLinkHandlers }).onLink(link);
  await new Promise((resolve) => setImmediate(resolve)); // the client id is assigned
  const writes = new WriteBatchEncoder({ writesMax: 4, payloadBytesMax: 256 }, nativeCrc32);
  writes.begin(7, 1);
  writes.addPut(Buffer.from('key'), 0, 3, Buffer.from('value'), 0, 5);
  const good = writes.finish().slice();
  handlers.onRecord(good);
  assert.equal(offered.length, 1, 'an intact batch goes to the head');
  const damaged = good.slice();
  damaged[damaged.length - 1]! ^= 0x01; // the last byte of the value
  handlers.onRecord(damaged);
  assert.equal(offered.length, 1, 'the damaged batch never reaches the head');
  assert.match(closedWith ?? 'not closed', /DABBA_ERR_CORRUPT/);
});
