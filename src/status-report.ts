/**
 * chain.status(): the in-process engine's view in the shape of a host's GET /status, as far as the
 * status page reads it (src/status-page.ts), so that `dabba demo --http` serves the same page: its
 * nodes stand where a cluster's hosts do (`hostId` "node 2"), each with the writes/s its replicas
 * applied and its heads' commit p99 (over the last second, as sampled by these calls); the writes/s
 * the clients had acknowledged since the call before, and the reconfigurations since the chain
 * started, newest first.
 */
import type { ReconfigurationEvent } from './chain.js';
import type { MetricsSnapshot } from './metrics/registry.js';
import { RecentHistogram } from './metrics/recent-histogram.js';
import { LATENCY_BUCKETS_SECONDS, WeightedHistogram } from './metrics/weighted-histogram.js';

export interface InProcessStatus {
  hostId: string;
  isMaster: boolean;
  settings: { chains: number; replicas: number };
  chains: Array<{ chain: number; epoch: number; members: Array<{ replicaId: number; hostId: string; role: string; appliedSeq: number; lag: number | null }> }>;
  hosts: Array<{ hostId: string; zone: null; url: null; heads: number; middles: number; tails: number; joining: number; writesPerSecond: number; commitP99Ms: number }>;
  writesPerSecond: number;
  commitP99Ms: number;
  reconfigurations: Array<{ time: string; chain: number; epoch: number; hosts: string[] }>;
}

const RECENT_RECONFIGURATIONS = 20;
const WINDOW_MS = 1000;

/** A node as a host: "node 2". */
export const nodeName = (node: number | string): string => `node ${node}`;

export class StatusReport {
  private readonly reconfigurations: InProcessStatus['reconfigurations'] = [];
  private readonly nodes = new Map<string, { atMs: number; writesApplied: number; writesPerSecond: number; commits: RecentHistogram }>();
  private readonly allCommits = new RecentHistogram(LATENCY_BUCKETS_SECONDS, WINDOW_MS);
  /** Writes the clients had acknowledged at the last call, and the rate since the one before. */
  private acknowledged = { atMs: Number.NEGATIVE_INFINITY, count: 0, perSecond: 0 };

  reconfigured(event: ReconfigurationEvent): void {
    this.reconfigurations.unshift({ time: new Date().toISOString(), chain: event.chain, epoch: event.epoch, hosts: event.members.map(nodeName) });
    this.reconfigurations.length = Math.min(this.reconfigurations.length, RECENT_RECONFIGURATIONS);
  }

  report(snapshot: MetricsSnapshot, liveNodes: readonly number[], replicas: number, nowMs: number): InProcessStatus {
    const byNode = new Map(liveNodes.map((node) => [nodeName(node), { heads: 0, middles: 0, tails: 0, joining: 0, writesApplied: 0, commits: new WeightedHistogram(LATENCY_BUCKETS_SECONDS) }]));
    const all = new WeightedHistogram(LATENCY_BUCKETS_SECONDS);
    for (const replica of snapshot.replicas) {
      const node = byNode.get(nodeName(replica.place));
      if (node === undefined) continue;
      if (replica.role === 'head' || replica.role === 'solo') node.heads++;
      if (replica.role === 'middle') node.middles++;
      if (replica.role === 'tail' || replica.role === 'solo') node.tails++;
      if (replica.role === 'joining') node.joining++;
      node.writesApplied += replica.writesApplied;
      if (replica.commitLatency !== null) {
        node.commits.add(replica.commitLatency);
        all.add(replica.commitLatency);
      }
    }
    this.allCommits.add(nowMs, all);
    const hosts = [...byNode].map(([hostId, node]) => {
      let seen = this.nodes.get(hostId);
      if (seen === undefined) {
        seen = { atMs: nowMs, writesApplied: node.writesApplied, writesPerSecond: 0, commits: new RecentHistogram(LATENCY_BUCKETS_SECONDS, WINDOW_MS) };
        this.nodes.set(hostId, seen);
      } else if (nowMs - seen.atMs >= 100) {
        seen.writesPerSecond = ((node.writesApplied - seen.writesApplied) * 1000) / (nowMs - seen.atMs);
        seen.atMs = nowMs;
        seen.writesApplied = node.writesApplied;
      }
      seen.commits.add(nowMs, node.commits);
      const { commits: _commits, writesApplied: _writes, ...roles } = node;
      return { hostId, zone: null, url: null, ...roles, writesPerSecond: Math.round(Math.max(0, seen.writesPerSecond)), commitP99Ms: seen.commits.window().quantile(0.99) * 1000 };
    });
    for (const name of this.nodes.keys()) if (!byNode.has(name)) this.nodes.delete(name);
    const acknowledged = snapshot.clients.reduce((sum, client) => sum + client.writesAcknowledged, 0);
    if (nowMs - this.acknowledged.atMs >= 100) {
      this.acknowledged.perSecond = ((acknowledged - this.acknowledged.count) * 1000) / (nowMs - this.acknowledged.atMs);
      this.acknowledged = { atMs: nowMs, count: acknowledged, perSecond: this.acknowledged.perSecond };
    }
    return {
      hostId: 'this process',
      isMaster: true,
      settings: { chains: snapshot.chains.length, replicas },
      chains: snapshot.chains.map(({ chain, epoch }) => ({
        chain,
        epoch,
        members: snapshot.replicas
          .filter((replica) => replica.chain === chain)
          .map((replica) => ({ replicaId: replica.replicaId, hostId: nodeName(replica.place), role: replica.role, appliedSeq: replica.appliedSeq, lag: replica.lag })),
      })),
      hosts,
      writesPerSecond: Math.round(Math.max(0, this.acknowledged.perSecond)),
      commitP99Ms: this.allCommits.window().quantile(0.99) * 1000,
      reconfigurations: [...this.reconfigurations],
    };
  }
}
