/**
 * `npm run fuzz -- --live`: the live fuzz session of test/live-fuzz.test.ts at a larger scale, from
 * the command line (see ./cli.ts).
 */
import { startEtcdCluster } from '../../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../../src/bench/peers/servers.js';
import { HostCluster } from '../helpers/host-cluster.js';
import { createNetnsLab } from '../helpers/netns-lab.js';
import { fuzzCluster } from './live-session.js';

const CLIENT_SECRET = 'live-fuzz-cli-client-secret-0123456789';

/** Runs one session; returns the exit code (0: nothing crashed, nothing was lost). */
export async function runLiveSession(seed: number, frames: number, handshakes: number): Promise<number> {
  const servers = new LocalServers('live-fuzz-cli');
  const lab = await createNetnsLab('dabfzcli', 3);
  let cluster: HostCluster | null = null;
  try {
    const etcd = await startEtcdCluster(servers, 1, await lab.addServerAddress());
    cluster = await HostCluster.create(lab, etcd.clientUrls, `/dabba-live-fuzz-cli-${process.pid}/`, CLIENT_SECRET);
    for (let index = 0; index < 3; index++) await cluster.start(index);
    await cluster.waitForFullChain();
    const started = performance.now();
    const outcome = await fuzzCluster(cluster, CLIENT_SECRET, {
      seed,
      frames,
      handshakes,
      onPhase: (name, ms) => process.stdout.write(`phase ${name}: ${(ms / 1000).toFixed(1)} s\n`),
    });
    const lines = [`live fuzz, seed ${seed}, ${((performance.now() - started) / 1000).toFixed(1)} s (${lab.isolated ? 'network namespaces' : 'loopback'})`];
    lines.push('class                                             sent   refused  accepted');
    for (const [name, counts] of Object.entries(outcome.report)) {
      lines.push(`${name.padEnd(47)} ${String(counts.sent).padStart(7)} ${String(counts.refused).padStart(9)} ${String(counts.accepted).padStart(9)}`);
    }
    lines.push(`hosts that died: ${outcome.exited.length}; chain ${JSON.stringify(outcome.membersBefore)} -> ${JSON.stringify(outcome.membersAfter)}`);
    lines.push(`RSS MiB before ${outcome.rssMiBBefore.map(Math.round).join(', ')}, after ${outcome.rssMiBAfter.map(Math.round).join(', ')}`);
    lines.push(`acknowledged writes ${outcome.acknowledgedWrites}, lost ${outcome.lostWrites.length}; replicas identical: ${outcome.digestsAgree}`);
    lines.push(`host 1 refusals: ${JSON.stringify(outcome.refusals)}`);
    process.stdout.write(`${lines.join('\n')}\n`);
    for (const exited of outcome.exited) process.stderr.write(`${exited}\n`);
    const sound = outcome.exited.length === 0 && outcome.lostWrites.length === 0 && outcome.digestsAgree && JSON.stringify(outcome.membersAfter) === JSON.stringify(outcome.membersBefore);
    return sound ? 0 : 1;
  } finally {
    await cluster?.close();
    await lab.close();
    await servers.stop(1000);
  }
}
