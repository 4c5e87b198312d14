/**
 * The accepting end of peer-link tests, run as its own process (node --import tsx). Prints one
 * JSON object per line on stdout: {ready, port, native}, {log}, {link}, {ack}, {pullDone}.
 * What a link does is chosen by the connecting node's id:
 *   push-*   the peer sends records 1, 2, 3...; we check order and ack every ACK_EVERY records
 *   pull-N   we send records 1..N to the peer, with backpressure
 * Environment: PEER_SECRET (hex), PEER_MAX_RECORD_BYTES, PEER_HIGH_WATER_BYTES, PEER_LOW_WATER_BYTES.
 */
import { listenPeerLinks, type PeerLink, type PeerLinkHandlers } from '../../src/transport/peer-link.js';
import { RECORD_BYTES, recordProblem, recordSeq, writeRecord } from './peer-records.js';

const ACK_EVERY = 1000;

function emit(message: object): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function pushHandlers(link: PeerLink): PeerLinkHandlers {
  let expected = 1;
  const ack = new Uint8Array(RECORD_BYTES);
  return {
    onRecord(bytes) {
      const seq = recordSeq(bytes);
      if (seq !== expected) {
        link.close(4090, `out of order: got ${seq}, expected ${expected}`);
        return;
      }
      expected++;
      // Acks are records too (seq = records received in order); a refused ack is simply skipped.
      if (seq % ACK_EVERY === 0) link.trySend(writeRecord(ack, seq));
    },
  };
}

function pullHandlers(link: PeerLink, count: number): PeerLinkHandlers {
  const scratch = new Uint8Array(RECORD_BYTES);
  let next = 1;
  let refusals = 0;
  let writables = 0;
  const pump = (): void => {
    while (next <= count) {
      if (!link.trySend(writeRecord(scratch, next))) {
        refusals++;
        return;
      }
      next++;
    }
    emit({ pullDone: { count, refusals, writables } });
  };
  queueMicrotask(pump);
  return {
    onRecord() {},
    onWritable() {
      writables++;
      pump();
    },
  };
}

const server = await listenPeerLinks({
  port: 0,
  host: '127.0.0.1',
  secret: Buffer.from(process.env.PEER_SECRET ?? '', 'hex'),
  nodeId: 'test-server',
  maxRecordBytes: Number(process.env.PEER_MAX_RECORD_BYTES ?? 4096),
  validate: recordProblem,
  highWaterBytes: Number(process.env.PEER_HIGH_WATER_BYTES ?? 1024 * 1024),
  lowWaterBytes: Number(process.env.PEER_LOW_WATER_BYTES ?? 256 * 1024),
  log: (entry) => emit({ log: entry }),
  onLink(link) {
    emit({ link: link.remoteNodeId });
    const pull = /^pull-(\d+)$/.exec(link.remoteNodeId);
    return pull ? pullHandlers(link, Number(pull[1])) : pushHandlers(link);
  },
});
emit({ ready: true, port: server.port, native: server.native });
process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
