/** One chain's client figures for the metrics (./registry.ts), read off its session. */
import type { ClientSession } from '../session/client-session.js';
import type { ClientSample } from './registry.js';

export function clientSample(chain: number, session: ClientSession): ClientSample {
  const { writes, reads } = session;
  return {
    chain,
    writesAccepted: writes.accepted,
    writesAcknowledged: writes.writesAcked,
    writesPending: writes.pending,
    readsAnswered: reads.readsAnswered,
    readsPending: reads.pending,
    batchesSent: writes.batchesSent,
    bytesSent: writes.bytesSent,
    batchesWaiting: writes.waitingBatches,
    writeLatency: writes.latency,
    readLatency: reads.latency,
    batchWrites: writes.batchWrites,
    batchWritesCap: writes.latencyController?.writesCap ?? writes.batchWritesMax,
  };
}
