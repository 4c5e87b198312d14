/**
 * `dabba status --etcd URLS [--etcd-ca ...]`: the cluster's chain table as etcd holds it — each
 * chain's epoch and members in chain order with their roles, hosts, sequence numbers and lag
 * behind the tail — whether each member is healthy (its host holds a live lease in the member's
 * incarnation and reports it in the chain's current epoch), and per host how many chains it heads,
 * is a middle of, tails and joins.
 */
import { participants, roleIn } from '../../native-free-core/master/chain-master.js';
import { EtcdConfigurationStore, reportedStatus, type ClusterSettings, type EtcdAuth, type EtcdTls, type HostTable, type ReplicaStatus } from '../master/etcd-store.js';

export interface ClusterStatus {
  prefix: string;
  /** Null before any host has started the cluster. */
  settings: ClusterSettings | null;
  chains: Array<{
    chain: number;
    /** 0 while the chain is not placed yet. */
    epoch: number;
    members: Array<{
      replicaId: number;
      role: string;
      hostId: string;
      url: string | null;
      healthy: boolean;
      appliedSeq: number | null;
      committedSeq: number | null;
      /** Writes behind the chain's tail; null when either has not reported. */
      lag: number | null;
    }>;
  }>;
  hosts: Array<{ hostId: string; zone: string | null; url: string | null; heads: number; middles: number; tails: number; joining: number; writesPerSecond: number | null }>;
  /** Live hosts that hold no replica (waiting to be placed). */
  spareHosts: string[];
}

/** `access`: etcd's TLS and authentication, as `dabba serve` takes them (./etcd-access.ts). */
export async function readClusterStatus(etcd: string[], prefix?: string, access: { etcdTls?: EtcdTls; etcdAuth?: EtcdAuth } = {}): Promise<ClusterStatus> {
  const store = new EtcdConfigurationStore({ hosts: etcd, ...(prefix === undefined ? {} : { prefix }), tls: access.etcdTls, auth: access.etcdAuth });
  try {
    const settings = await store.settings();
    if (settings === null) return { prefix: store.prefix, settings, chains: [], hosts: [], spareHosts: [] };
    const { entries } = await store.loadTable(settings.chains);
    let table: HostTable = new Map();
    const stop = await store.watchHostTable((current) => {
      table = current;
    });
    await stop();
    const hosts = new Map<string, ClusterStatus['hosts'][number]>();
    for (const [hostId, { info, status }] of table) {
      hosts.set(hostId, { hostId, zone: info?.zone ?? null, url: info?.url ?? null, heads: 0, middles: 0, tails: 0, joining: 0, writesPerSecond: status?.writesPerSecond ?? null });
    }
    const chains: ClusterStatus['chains'] = entries.map((entry, chain) => {
      if (entry === null) return { chain, epoch: 0, members: [] };
      const { configuration } = entry;
      const reportOf = (replicaId: number): ReplicaStatus | null => reportedStatus(table, entry.homes.get(replicaId)!, replicaId);
      const tail = reportOf(configuration.members.at(-1)!);
      const members = participants(configuration).map((replicaId) => {
        const home = entry.homes.get(replicaId)!;
        const role = String(roleIn(configuration, replicaId));
        const report = reportOf(replicaId);
        const host = hosts.get(home.host);
        if (host !== undefined && report !== null) {
          if (role === 'head' || role === 'solo') host.heads++;
          if (role === 'middle') host.middles++;
          if (role === 'tail' || role === 'solo') host.tails++;
          if (role === 'joining') host.joining++;
        }
        return {
          replicaId,
          role,
          hostId: home.host,
          url: host?.url ?? null,
          healthy: report !== null && report.epoch === configuration.epoch,
          appliedSeq: report?.appliedSeq ?? null,
          committedSeq: report?.committedSeq ?? null,
          lag: report === null || tail === null ? null : Math.max(0, tail.appliedSeq - report.appliedSeq),
        };
      });
      return { chain, epoch: configuration.epoch, members };
    });
    const holding = new Set(chains.flatMap((chain) => chain.members.map((member) => member.hostId)));
    return { prefix: store.prefix, settings, chains, hosts: [...hosts.values()], spareHosts: [...hosts.keys()].filter((hostId) => !holding.has(hostId)).sort() };
  } finally {
    await store.close();
  }
}

/** Whether every chain is placed and every member healthy (`dabba status` exits 0 exactly then). */
export function isHealthy(status: ClusterStatus): boolean {
  return status.settings !== null && status.chains.every((chain) => chain.epoch > 0 && chain.members.every((member) => member.healthy));
}

export function formatClusterStatus(status: ClusterStatus): string {
  if (status.settings === null) return `cluster ${status.prefix}: no chain configured yet (no host has registered)\n`;
  const { chains, replicas } = status.settings;
  const lines = [`cluster ${status.prefix}: ${chains} chain${chains === 1 ? '' : 's'} of ${replicas} replicas, ${status.hosts.length} live hosts`];
  const header = ['chain', 'epoch', 'replica', 'role', 'host', 'health', 'applied', 'committed', 'lag'];
  const rows: string[][] = [];
  for (const chain of status.chains) {
    if (chain.epoch === 0) rows.push([String(chain.chain), '-', '-', 'not placed', '-', '-', '-', '-', '-']);
    for (const member of chain.members) {
      rows.push([
        String(chain.chain),
        String(chain.epoch),
        String(member.replicaId),
        member.role,
        member.hostId,
        member.healthy ? 'ok' : member.url === null ? 'GONE' : 'LAGGING',
        member.appliedSeq?.toString() ?? '-',
        member.committedSeq?.toString() ?? '-',
        member.lag?.toString() ?? '-',
      ]);
    }
  }
  lines.push(...table(header, rows));
  lines.push('');
  const hostRows = status.hosts.map((host) => [host.hostId, host.zone ?? '-', host.url ?? '-', String(host.heads), String(host.middles), String(host.tails), String(host.joining), host.writesPerSecond?.toString() ?? '-']);
  lines.push(...table(['host', 'zone', 'url', 'heads', 'middles', 'tails', 'joining', 'writes/s'], hostRows));
  if (status.spareHosts.length > 0) lines.push(`holding no replica: ${status.spareHosts.join(', ')}`);
  return `${lines.join('\n')}\n`;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  return [header, ...rows].map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd());
}
