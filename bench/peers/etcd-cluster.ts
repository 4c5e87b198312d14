/**
 * A real etcd cluster, on loopback by default, for the etcd peer benchmark and the tests of the etcd
 * configuration store: members with their own ports and temp data dirs, started through
 * LocalServers (so stop() ends exactly these processes), ready once every member sees a leader.
 */
import { ensureBinary, freePorts, type LocalServers, type StartedServer, waitUntilReady } from './servers.js';

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly server: StartedServer;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  readonly clientUrls: string[];
}

/**
 * Starts `memberCount` members (3 by default) and returns once each reports a healthy cluster.
 * Every member listens (client and peer ports) on `host`, an address of this machine: loopback by
 * default, or e.g. a network lab's gateway address so that processes in other network namespaces
 * reach the cluster. Short heartbeat and election timeouts, so a lost leader is replaced in about a
 * second.
 */
export async function startEtcdCluster(servers: LocalServers, memberCount = 3, host = '127.0.0.1'): Promise<EtcdCluster> {
  const binary = await ensureBinary('etcd', 'etcd-server');
  // The ports are probed free on 127.0.0.1. A port free there is free on `host` too unless some
  // process listens on exactly `host:port`; a listener on the wildcard address blocks both.
  const ports = await freePorts(2 * memberCount);
  // An IPv6 address needs brackets in a URL.
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const addresses = Array.from({ length: memberCount }, (_, index) => ({
    name: `member-${index + 1}`,
    clientUrl: `http://${urlHost}:${ports[2 * index]}`,
    peerUrl: `http://${urlHost}:${ports[2 * index + 1]}`,
  }));
  const initialCluster = addresses.map((member) => `${member.name}=${member.peerUrl}`).join(',');
  const members: EtcdMember[] = addresses.map((member) => ({
    ...member,
    server: servers.start(member.name, binary, [
      '--name', member.name,
      '--data-dir', servers.dataDir(member.name),
      '--listen-client-urls', member.clientUrl,
      '--advertise-client-urls', member.clientUrl,
      '--listen-peer-urls', member.peerUrl,
      '--initial-advertise-peer-urls', member.peerUrl,
      '--initial-cluster', initialCluster,
      '--initial-cluster-state', 'new',
      // Unique per cluster, so members of two clusters started side by side never mix.
      '--initial-cluster-token', `dabba-${ports[0]}`,
      '--heartbeat-interval', '50',
      '--election-timeout', '500',
      '--logger', 'zap',
      '--log-level', 'warn',
    ]),
  }));
  await waitUntilReady(
    'the etcd cluster to elect a leader',
    async () => (await Promise.all(members.map((member) => isHealthy(member.clientUrl)))).every(Boolean),
    members.map((member) => member.server),
  );
  return { members, clientUrls: members.map((member) => member.clientUrl) };
}

/** True once the member sees a leader (and no alarm is raised). */
export async function isHealthy(clientUrl: string): Promise<boolean> {
  const response = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
  return response.ok && ((await response.json()) as { health?: string }).health === 'true';
}

/**
 * Whether this member is the raft leader, from its status through etcd's JSON gateway (member ids
 * are uint64, so they come back as decimal strings and are compared as such).
 */
export async function isLeader(clientUrl: string): Promise<boolean> {
  const response = await fetch(`${clientUrl}/v3/maintenance/status`, {
    method: 'POST',
    body: '{}',
    signal: AbortSignal.timeout(1000),
  });
  if (!response.ok) return false;
  const status = (await response.json()) as { header?: { member_id?: string }; leader?: string };
  return status.leader !== undefined && status.leader === status.header?.member_id;
}
