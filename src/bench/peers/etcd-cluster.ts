/**
 * A real etcd cluster, on loopback by default, for the etcd peer benchmark and the tests of the etcd
 * configuration store: members with their own ports and temp data dirs, started through
 * LocalServers (so stop() ends exactly these processes), ready once every member sees a leader.
 * Optionally over TLS: https:// for clients and peers, and client certificates required.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
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

/** TLS for every member (e.g. from src/bench/peers/throwaway-ca.ts). */
export interface EtcdClusterTls {
  /** What every certificate here chains to; members require clients to present one (--client-cert-auth). */
  caFile: string;
  /** Members serve clients and each other with this certificate: it must name `host` and allow serverAuth and clientAuth. */
  certFile: string;
  keyFile: string;
  /** What this process presents when it checks the members' health. */
  clientCertFile: string;
  clientKeyFile: string;
}

/**
 * Starts `memberCount` members (3 by default) and returns once each reports a healthy cluster.
 * Every member listens (client and peer ports) on `host`, an address of this machine: loopback by
 * default, or e.g. a network lab's gateway address so that processes in other network namespaces
 * reach the cluster. Short heartbeat and election timeouts, so a lost leader is replaced in about a
 * second. With `tls`, clients and members speak https:// and must present a certificate.
 */
export async function startEtcdCluster(servers: LocalServers, memberCount = 3, host = '127.0.0.1', tls?: EtcdClusterTls): Promise<EtcdCluster> {
  const binary = await ensureBinary('etcd', 'etcd-server');
  // The ports are probed free on 127.0.0.1. A port free there is free on `host` too unless some
  // process listens on exactly `host:port`; a listener on the wildcard address blocks both.
  const ports = await freePorts(2 * memberCount);
  // An IPv6 address needs brackets in a URL.
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const scheme = tls === undefined ? 'http' : 'https';
  const addresses = Array.from({ length: memberCount }, (_, index) => ({
    name: `member-${index + 1}`,
    clientUrl: `${scheme}://${urlHost}:${ports[2 * index]}`,
    peerUrl: `${scheme}://${urlHost}:${ports[2 * index + 1]}`,
  }));
  const tlsFlags =
    tls === undefined
      ? []
      : [
          '--cert-file', tls.certFile, '--key-file', tls.keyFile, '--trusted-ca-file', tls.caFile, '--client-cert-auth',
          '--peer-cert-file', tls.certFile, '--peer-key-file', tls.keyFile, '--peer-trusted-ca-file', tls.caFile, '--peer-client-cert-auth',
        ];
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
      ...tlsFlags,
    ]),
  }));
  await waitUntilReady(
    'the etcd cluster to elect a leader',
    async () => (await Promise.all(members.map((member) => (tls === undefined ? isHealthy(member.clientUrl) : isHealthyOverTls(member.clientUrl, tls))))).every(Boolean),
    members.map((member) => member.server),
  );
  return { members, clientUrls: members.map((member) => member.clientUrl) };
}

/** True once the member sees a leader (and no alarm is raised). */
export async function isHealthy(clientUrl: string): Promise<boolean> {
  const response = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1000) });
  return response.ok && ((await response.json()) as { health?: string }).health === 'true';
}

/** isHealthy() of a member that requires client certificates. */
export async function isHealthyOverTls(clientUrl: string, tls: EtcdClusterTls): Promise<boolean> {
  return (await getJsonOverTls<{ health?: string }>(`${clientUrl}/health`, tls)).health === 'true';
}

/** GET over https with a client certificate (fetch cannot present one). Rejects on any status but 200. */
function getJsonOverTls<T>(url: string, tls: EtcdClusterTls): Promise<T> {
  return new Promise((resolve, reject) => {
    const options = { ca: readFileSync(tls.caFile), cert: readFileSync(tls.clientCertFile), key: readFileSync(tls.clientKeyFile), timeout: 1000 };
    const get = request(url, options, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        if (response.statusCode !== 200) return reject(new Error(`${url} answered ${response.statusCode}`));
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as T);
        } catch (error) {
          reject(error as Error);
        }
      });
    });
    get.on('timeout', () => get.destroy(new Error(`${url} did not answer in 1 s`)));
    get.on('error', reject);
    get.end();
  });
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
