/**
 * One live-fuzz session against a running HostCluster: a well-behaved client writes while
 * runLiveFuzz sends hostile input; afterwards, what a test asserts on (or `npm run fuzz -- --live`
 * prints): each class's counts, whether a host died, whether the chain lost a replica, each host's
 * memory before and after, and whether every acknowledged write reads back the same on every replica.
 */
import { readFileSync } from 'node:fs';
import { connect, type RemoteClient } from '../../src/client/index.js';
import { resolveOptions } from '../../src/options.js';
import type { HostCluster } from '../helpers/host-cluster.js';
import { runLiveFuzz, type LiveFuzzOptions, type LiveFuzzReport } from './live-fuzz.js';

export interface LiveFuzzOutcome {
  report: LiveFuzzReport;
  /** Hosts whose process exited meanwhile, with the end of their log. */
  exited: string[];
  membersBefore: number[];
  membersAfter: number[];
  rssMiBBefore: number[];
  rssMiBAfter: number[];
  acknowledgedWrites: number;
  /** Acknowledged writes that did not read back as written (key: expected, got). */
  lostWrites: string[];
  digestsAgree: boolean;
  /** Host 1's refusal counts from /status. */
  refusals: Record<string, number>;
}

export async function fuzzCluster(cluster: HostCluster, clientSecret: string, options: LiveFuzzOptions): Promise<LiveFuzzOutcome> {
  const defaults = resolveOptions({});
  const membersBefore = [...cluster.current!.members];
  const pids = cluster.hosts.map((host) => host.child!.pid!);
  const client = await connect({ hosts: cluster.hosts.map((host) => host.url), secret: clientSecret });
  const writer = wellBehavedWriter(client);
  const rssMiBBefore = pids.map(rssMiB);
  let report: LiveFuzzReport;
  try {
    report = await runLiveFuzz(
      {
        urls: cluster.hosts.map((host) => host.url),
        clientSecret: Buffer.from(clientSecret),
        peerSecret: Buffer.from(cluster.peerSecret),
        memberReplicaId: membersBefore[Math.min(1, membersBefore.length - 1)]!,
        linkRecordBytesMax: defaults.linkRecordBytesMax,
        valueBytesMax: defaults.valueBytesMax,
      },
      options,
    );
  } finally {
    await writer.stop();
  }
  const rssMiBAfter = pids.map(rssMiB);
  const exited = cluster.hosts.filter((host) => host.child === null || host.child.exitCode !== null || host.child.signalCode !== null).map((host) => `${host.hostId}: ${host.log.join('').slice(-2000)}`);
  await client.whenIdle();
  const lostWrites: string[] = [];
  for (const [key, value] of writer.acknowledged) {
    const got = (await client.get(key))?.toString();
    if (got !== value) lostWrites.push(`${key}: ${value}, got ${got}`);
  }
  const digests = await Promise.all(cluster.hosts.map(async (host) => ((await (await fetch(`${host.httpUrl}/digest`)).json()) as { digest: string }).digest));
  const status = (await (await fetch(`${cluster.hosts[0]!.httpUrl}/status`)).json()) as { refusals: Record<string, number> };
  await client.close();
  return {
    report,
    exited,
    membersBefore,
    membersAfter: [...cluster.current!.members],
    rssMiBBefore,
    rssMiBAfter,
    acknowledgedWrites: writer.acknowledged.size,
    lostWrites,
    digestsAgree: digests.every((digest) => digest === digests[0]),
    refusals: status.refusals,
  };
}

/** Resident memory of a process, in MiB (Linux). */
function rssMiB(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match === null ? 0 : Number(match[1]) / 1024;
}

/** Writes distinct keys one window at a time until stopped; remembers what was acknowledged. */
function wellBehavedWriter(client: RemoteClient): { acknowledged: Map<string, string>; stop(): Promise<void> } {
  const acknowledged = new Map<string, string>();
  let running = true;
  const loop = (async () => {
    for (let round = 0; running; round++) {
      const entries = Array.from({ length: 64 }, (_, index) => [`good-${(round * 64 + index) % 4096}`, `round-${round}-${index}`] as const);
      await client.putMany(entries);
      for (const [key, value] of entries) acknowledged.set(key, value);
    }
  })();
  return {
    acknowledged,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}
