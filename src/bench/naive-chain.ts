/**
 * The naive baseline chain: replicas on piscina worker threads like the real engine, but every
 * write is its own postMessage hop and every ack its own message. put() has the same signature as
 * Chain.put so the same load generator drives both.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { NaiveReplicaTask } from './naive-replica.js';

export class NaiveChain {
  private readonly pool: Piscina<NaiveReplicaTask, number>;
  private readonly head: MessagePort;
  private readonly acks: MessagePort;
  private readonly pending = new Map<number, () => void>();
  private readonly done: Promise<number>[] = [];
  private nextSeq = 1;

  constructor(replicas: number) {
    const extension = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
    this.pool = new Piscina({
      filename: new URL(`./naive-replica${extension}`, import.meta.url).href,
      minThreads: replicas,
      maxThreads: replicas,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
    });
    const links = Array.from({ length: replicas }, () => new MessageChannel());
    const ackChannel = new MessageChannel();
    this.head = links[0]!.port1;
    this.acks = ackChannel.port1;
    for (let index = 0; index < replicas; index++) {
      const isTail = index === replicas - 1;
      const task: NaiveReplicaTask = {
        input: links[index]!.port2,
        output: isTail ? null : links[index + 1]!.port1,
        acks: isTail ? ackChannel.port2 : null,
      };
      const transferList = [task.input, ...(task.output ? [task.output] : []), ...(task.acks ? [task.acks] : [])];
      this.done.push(this.pool.run(task, { transferList }));
    }
    this.acks.on('message', (seq: number) => {
      const resolve = this.pending.get(seq)!;
      this.pending.delete(seq);
      resolve();
    });
  }

  put(key: string, value: Uint8Array): Promise<void> {
    const seq = this.nextSeq++;
    const promise = new Promise<void>((resolve) => this.pending.set(seq, resolve));
    this.head.postMessage({ seq, key, value });
    return promise;
  }

  async close(): Promise<void> {
    this.head.postMessage(null);
    await Promise.all(this.done);
    this.head.close();
    this.acks.close();
    await this.pool.destroy();
  }
}
