/**
 * `dabba status --etcd URLS [--etcd-ca ...]`: the cluster's chain as etcd holds it — epoch, members in chain order
 * with their roles, hosts, URLs, sequence numbers and throughput — and whether each is healthy
 * (its host holds a live lease and reports the current epoch).
 */
import { roleIn, type Configuration } from '../../native-free-core/master/chain-master.js';
import { EtcdConfigurationStore, type EtcdAuth, type EtcdTls, type HostTable } from '../master/etcd-store.js';

export interface ClusterStatus {
  prefix: string;
  configuration: Configuration | null;
  members: Array<{
    replicaId: number;
    role: string;
    hostId: string | null;
    url: string | null;
    healthy: boolean;
    epoch: number | null;
    appliedSeq: number | null;
    committedSeq: number | null;
    writesPerSecond: number | null;
  }>;
  /** Live hosts not (yet) in the chain: waiting to join. */
  spareHosts: string[];
}

/** `access`: etcd's TLS and authentication, as `dabba serve` takes them (./etcd-access.ts). */
export async function readClusterStatus(etcd: string[], prefix?: string, access: { etcdTls?: EtcdTls; etcdAuth?: EtcdAuth } = {}): Promise<ClusterStatus> {
  const store = new EtcdConfigurationStore({ hosts: etcd, ...(prefix === undefined ? {} : { prefix }), tls: access.etcdTls, auth: access.etcdAuth });
  try {
    const configuration = await store.load();
    let table: HostTable = new Map();
    const stop = await store.watchHostTable((current) => {
      table = current;
    });
    await stop();
    const members: ClusterStatus['members'] = [];
    const ids = configuration === null ? [] : [...configuration.members, ...(configuration.joining === null ? [] : [configuration.joining])];
    const placed = new Set<string>();
    for (const replicaId of ids) {
      const entry = [...table.entries()].find(([, value]) => value.info?.replicaId === replicaId);
      const status = entry?.[1].status ?? null;
      if (entry !== undefined) placed.add(entry[0]);
      members.push({
        replicaId,
        role: String(roleIn(configuration!, replicaId)),
        hostId: entry?.[0] ?? null,
        url: entry?.[1].info?.url ?? null,
        healthy: entry !== undefined && status !== null && status.epoch === configuration!.epoch,
        epoch: status?.epoch ?? null,
        appliedSeq: status?.appliedSeq ?? null,
        committedSeq: status?.committedSeq ?? null,
        writesPerSecond: status?.writesPerSecond ?? null,
      });
    }
    return { prefix: store.prefix, configuration, members, spareHosts: [...table.keys()].filter((hostId) => !placed.has(hostId)).sort() };
  } finally {
    await store.close();
  }
}

export function formatClusterStatus(status: ClusterStatus): string {
  if (status.configuration === null) return `cluster ${status.prefix}: no chain configured yet (no host has registered)\n`;
  const lines = [`cluster ${status.prefix}: epoch ${status.configuration.epoch}, ${status.configuration.members.length} members`];
  const header = ['replica', 'role', 'host', 'url', 'health', 'applied', 'committed', 'writes/s'];
  const rows = status.members.map((member) => [
    String(member.replicaId),
    member.role,
    member.hostId ?? '-',
    member.url ?? '-',
    member.healthy ? 'ok' : member.hostId === null ? 'GONE' : 'LAGGING',
    member.appliedSeq?.toString() ?? '-',
    member.committedSeq?.toString() ?? '-',
    member.writesPerSecond?.toString() ?? '-',
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => row[column]!.length)));
  for (const row of [header, ...rows]) lines.push(row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd());
  if (status.spareHosts.length > 0) lines.push(`waiting to join: ${status.spareHosts.join(', ')}`);
  return `${lines.join('\n')}\n`;
}
