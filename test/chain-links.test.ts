/**
 * A host's links to its successors (src/host/chain-links.ts), with fake links: only the replica the
 * configuration names as successor gets its Acks and Hellos to the replica; a link from any other
 * replica waits for a configuration that names it (keeping its Hello) or is closed; an Ack or Hello
 * larger than the control ring's limit is refused before it reaches the ring (one such frame, up
 * to 4 MiB, used to be taken towards a 64 KiB ring).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Configuration } from '../native-free-core/master/chain-master.js';
import { AckEncoder, frameKind, HelloEncoder, MessageKind } from '../native-free-core/wire/codec.js';
import { ChainLinks, NOT_A_NEIGHBOUR_CLOSE_CODE } from '../src/host/chain-links.js';
import type { PeerLink, PeerLinkHandlers } from '../src/transport/peer-link.js';

interface FakeLink {
  link: PeerLink;
  handlers: PeerLinkHandlers;
  closedWith: { code: number; reason: string } | null;
}

function harness(): { links: ChainLinks; offered: Uint8Array[]; connect(nodeId: string): FakeLink } {
  const offered: Uint8Array[] = [];
  const links = new ChainLinks({
    controlFrameBytesMax: 1024,
    openUpstream: () => Promise.reject(new Error('not used')),
    connectionInboundBytesMax: 1 << 20,
    urlOf: () => null,
    replicaProgress: () => null,
    offerBatch: () => true,
    offerAck: (frame) => {
      offered.push(frame.slice());
      return true;
    },
    kick: () => undefined,
    joinLinkLost: () => undefined,
    predecessorRefused: () => undefined,
    log: () => undefined,
  });
  const connect = (nodeId: string): FakeLink => {
    const fake: FakeLink = { link: null as unknown as PeerLink, handlers: null as unknown as PeerLinkHandlers, closedWith: null };
    fake.link = {
      localNodeId: 'host:test',
      remoteNodeId: nodeId,
      remoteAddress: 'test',
      get isOpen() {
        return fake.closedWith === null;
      },
      trySend: () => true,
      bufferedAmount: () => 0,
      close: (code = 1000, reason = '') => {
        if (fake.closedWith === null) fake.closedWith = { code, reason };
        fake.handlers?.onClose?.(code, reason);
      },
    };
    fake.handlers = links.acceptDownstream(fake.link);
    return fake;
  };
  return { links, offered, connect };
}

const configuration = (epoch: number, members: number[]): Configuration => ({ epoch, members, joining: null });
const acks = new AckEncoder();
const hellos = new HelloEncoder();

test('Acks and Hellos are taken from the named successor only; a link from another replica waits for a configuration that names it', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { links, offered, connect } = harness();
  links.update(configuration(1, [1, 2, 3]), 1, 'head');
  const successor = connect('replica:2');
  successor.handlers.onRecord(acks.encode({ epoch: 1, committedSeq: 5, clientId: 0, committedClientSeq: 0 }));
  assert.equal(offered.length, 1, 'the successor\'s ack reaches the replica');

  // Replica 3 dials before this host hears that it is the successor now (replica 2 failed).
  const next = connect('replica:3');
  next.handlers.onRecord(acks.encode({ epoch: 2, committedSeq: 5, clientId: 0, committedClientSeq: 0 }));
  next.handlers.onRecord(hellos.encode({ epoch: 2, replicaId: 3, appliedSeq: 4 }).slice());
  assert.equal(offered.length, 1, 'nothing from a replica that is not the successor reaches the replica');
  assert.equal(next.closedWith, null, 'it may be the successor soon: it waits');
  links.update(configuration(2, [1, 3]), 1, 'head');
  // Its Hello, then its newest ack: dropped, the commit point would wait for the next write.
  assert.deepEqual(offered.slice(1).map((frame) => frameKind(frame)), [MessageKind.hello, MessageKind.ack], 'named now: its Hello and then its ack reach the replica');
  successor.handlers.onRecord(hellos.encode({ epoch: 2, replicaId: 2, appliedSeq: 0 }).slice());
  assert.equal(offered.length, 3, 'the former successor\'s Hello does not');

  // A replica no configuration names is closed after a few seconds.
  const stranger = connect('replica:9');
  t.mock.timers.tick(5000);
  assert.equal(stranger.closedWith?.code, NOT_A_NEIGHBOUR_CLOSE_CODE);
  // A peer that is not a replica at all is refused at once.
  const notReplica = connect('client:5');
  assert.match(notReplica.closedWith?.reason ?? '', /DABBA_ERR_UNAUTHENTICATED/);
  links.closeAll();
});

test('an Ack or Hello larger than the control ring takes is refused before it reaches the ring', () => {
  const { links, offered, connect } = harness();
  links.update(configuration(1, [1, 2]), 1, 'head');
  const successor = connect('replica:2');
  const padded = new Uint8Array(4 * 1024 * 1024);
  padded.set(acks.encode({ epoch: 1, committedSeq: 1, clientId: 0, committedClientSeq: 0 }));
  successor.handlers.onRecord(padded);
  assert.equal(offered.length, 0);
  assert.match(successor.closedWith?.reason ?? '', /DABBA_ERR_RECORD_TOO_LARGE/);
  links.closeAll();
});
