/**
 * Hostile input against three running `dabba serve` hosts (each in its own network namespace as
 * root, loopback otherwise), while a well-behaved client writes: every class of test/fuzz/live-fuzz.ts
 * must be refused by the host (or accepted, where a client may send it), no host may die, no
 * replica may leave the chain, memory must stay bounded, and every write the client had
 * acknowledged must read back, identically on every replica. Then the largest legal value, put
 * over HTTP, must survive the restart of its tail and of its head (a value over ~255 KiB used to
 * crash every replica that copied it to a joiner).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { resolveOptions } from '../src/options.js';
import { fuzzCluster } from './fuzz/live-session.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';

const SECRET = 'live-fuzz-client-secret-0123456789';
const servers = new LocalServers('live-fuzz-test');
let lab: NetnsLab;
let cluster: HostCluster;
const defaults = resolveOptions({});

before(async () => {
  lab = await createNetnsLab('dabfuzz', 3);
  const etcdAddress = await lab.addServerAddress();
  const etcd = await startEtcdCluster(servers, 1, etcdAddress);
  cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-live-fuzz-${process.pid}/`, SECRET);
});

after(() => closeHostTest(cluster, lab, servers));

test('hostile input on every door of three hosts: refused, nothing crashes, nothing is lost', { timeout: 240_000 }, async (t) => {
  for (let index = 0; index < 3; index++) await cluster.start(index);
  await cluster.waitForFullChain();
  const outcome = await fuzzCluster(cluster, SECRET, {
    seed: 1,
    frames: 600,
    handshakes: 6,
    onPhase: (name, ms) => t.diagnostic(`phase ${name}: ${Math.round(ms)} ms`),
  });
  const { report } = outcome;
  for (const [name, counts] of Object.entries(report)) t.diagnostic(`${name}: ${counts.sent} sent, ${counts.refused} refused, ${counts.accepted} accepted`);
  t.diagnostic(`RSS MiB before ${outcome.rssMiBBefore.map(Math.round).join(', ')}, after ${outcome.rssMiBAfter.map(Math.round).join(', ')}`);
  t.diagnostic(`host 1 refusals: ${JSON.stringify(outcome.refusals)}`);

  // Every attack that must be refused was, every time.
  const alwaysRefused = Object.keys(report).filter((name) => /^(handshake|takeover|http: (?!random)|client: (a |frames of kinds))/.test(name));
  assert.ok(alwaysRefused.length >= 20, alwaysRefused.join(', '));
  for (const name of alwaysRefused) assert.equal(report[name]!.accepted, 0, `${name}: ${JSON.stringify(report[name])}`);
  assert.ok(report['crowd: idle handshakes']!.refused > 0, 'a crowd of unfinished handshakes was never turned away');
  assert.ok(report['client: mutated frames']!.refused > 0 && report['client: mutated frames']!.sent === 600);
  // No host died, no replica left the chain, memory stayed bounded, nothing acknowledged was lost.
  assert.deepEqual(outcome.exited, []);
  assert.deepEqual(outcome.membersAfter, outcome.membersBefore, `the chain changed: ${cluster.changesSince(0)}`);
  outcome.rssMiBAfter.forEach((after, index) => assert.ok(after < outcome.rssMiBBefore[index]! + 256, `host ${index + 1} grew from ${outcome.rssMiBBefore[index]} to ${after} MiB`));
  assert.ok(outcome.acknowledgedWrites > 0);
  assert.deepEqual(outcome.lostWrites, []);
  assert.equal(outcome.digestsAgree, true);
  assert.ok((outcome.refusals.DABBA_ERR_UNAUTHENTICATED ?? 0) > 0, JSON.stringify(outcome.refusals));
});

test('the largest value, put over HTTP, survives the restart of its tail and of its head', { timeout: 240_000 }, async () => {
  await cluster.waitForFullChain();
  const value = Buffer.alloc(defaults.valueBytesMax, 0);
  for (let index = 0; index < value.length; index++) value[index] = (index * 7) & 0xff;
  const key = 'k'.repeat(defaults.keyBytesMax);
  const put = await fetch(`${cluster.hosts[0]!.httpUrl}/kv/${key}`, { method: 'PUT', body: value });
  assert.equal(put.status, 204);
  const tooLarge = await fetch(`${cluster.hosts[0]!.httpUrl}/kv/${key}`, { method: 'PUT', body: Buffer.alloc(defaults.valueBytesMax + 1) });
  assert.equal(tooLarge.status, 413);
  for (const role of ['tail', 'head'] as const) {
    const victim = cluster.hostWithRole(role);
    const replica = cluster.replicaOf(victim)!;
    await cluster.kill(victim);
    await cluster.waitFor(`the ${role} (replica ${replica}) to be removed`, (configuration) => configuration !== null && !configuration.members.includes(replica));
    await cluster.start(victim);
    // It comes back as a new replica: it copies everything, the large entry with it, from the tail.
    await cluster.waitForFullChain();
    for (const host of cluster.hosts) {
      const response = await fetch(`${host.httpUrl}/kv/${key}`);
      assert.equal(response.status, 200, `after the ${role}'s restart, ${host.hostId} answered ${response.status}`);
      assert.ok(Buffer.from(await response.arrayBuffer()).equals(value), `after the ${role}'s restart, the value read from ${host.hostId} differs`);
    }
  }
  const digests = await Promise.all(cluster.hosts.map(async (host) => (await (await fetch(`${host.httpUrl}/digest`)).json()) as { digest: string }));
  for (const digest of digests) assert.equal(digest.digest, digests[0]!.digest, JSON.stringify(digests));
});
