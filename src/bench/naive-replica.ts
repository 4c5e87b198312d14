/**
 * Baseline replica for the benchmarks: the same chain built the naive way, one postMessage per
 * write down the chain and one ack message per write back to the client. It exists to be measured
 * against, side by side with the real engine.
 */
import type { MessagePort } from 'node:worker_threads';

export interface NaiveReplicaTask {
  /** Writes arrive here (from the client or the predecessor). */
  input: MessagePort;
  /** Writes go here (to the successor); null at the tail. */
  output: MessagePort | null;
  /** The tail acks each write here; null elsewhere. */
  acks: MessagePort | null;
}

interface NaiveWrite {
  seq: number;
  key: string;
  value: Uint8Array;
}

export default function runNaiveReplica(task: NaiveReplicaTask): Promise<number> {
  const store = new Map<string, Uint8Array>();
  return new Promise((resolve) => {
    task.input.on('message', (write: NaiveWrite | null) => {
      if (write === null) {
        task.output?.postMessage(null);
        task.input.close();
        task.output?.close();
        task.acks?.close();
        resolve(store.size);
        return;
      }
      store.set(write.key, write.value);
      if (task.output !== null) task.output.postMessage(write);
      else task.acks!.postMessage(write.seq);
    });
  });
}
