/**
 * Where the master runs across hosts (src/host/host.ts placeMaster): with one chain, on the tail's
 * host. When that host dies, its registration stays until its lease runs out; the others must not
 * keep stepping down towards it meanwhile (each step-down ends a term at once and hands leadership
 * to the next in line, round and round: before the fix, about one a tenth of a second).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startLocalHosts, type LocalHosts } from '../src/bench/local-hosts.js';

interface HostStatusLine {
  isMaster: boolean;
  chains: Array<{ chain: number; members: Array<{ role: string; hostId: string | null }> }>;
}

async function statusOf(hosts: LocalHosts, index: number): Promise<HostStatusLine | null> {
  try {
    return (await (await fetch(`${hosts.urls[index]!.replace('ws://', 'http://')}/status`)).json()) as HostStatusLine;
  } catch {
    return null;
  }
}

/** Polls until `check` holds for host `index`'s status (each poll a request: the condition lives in another process). */
async function until(hosts: LocalHosts, index: number, what: string, check: (status: HostStatusLine) => boolean): Promise<void> {
  const deadline = performance.now() + 60_000;
  for (;;) {
    const status = await statusOf(hosts, index);
    if (status !== null && check(status)) return;
    if (performance.now() > deadline) throw new Error(`host ${index + 1}: ${what} did not happen within 60 s: ${JSON.stringify(status)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("the tail's host, the master, killed: the others do not pass leadership round while its lease runs out", { timeout: 120_000 }, async (t) => {
  const hosts = await startLocalHosts(3, { hostArgs: () => ['--lease-ttl', '6'] });
  t.after(() => hosts.stop());
  const tailHostOf = (status: HostStatusLine): string | null => status.chains[0]?.members.find((member) => member.role === 'tail')?.hostId ?? null;
  await until(hosts, 0, 'a chain of 3', (status) => status.chains[0]?.members.length === 3 && tailHostOf(status) !== null);
  const tailIndex = Number(tailHostOf((await statusOf(hosts, 0))!)!.replace('bench-h', '')) - 1;
  await until(hosts, tailIndex, 'the master on the tail\'s host', (status) => status.isMaster);
  const survivors = [0, 1, 2].filter((index) => index !== tailIndex);
  const killedAt = new Date().toISOString();
  process.kill(hosts.pids[tailIndex]!, 'SIGKILL');
  // Until the master removes it, once its lease has run out.
  await until(hosts, survivors[0]!, 'the dead tail removed', (status) => status.chains[0]?.members.length === 2);
  const termsEnded = survivors
    .flatMap((index) => hosts.logs[index]!.join('').split('\n'))
    .filter((line) => line.includes("the master moves towards the tail's host") && (/"time":"([^"]+)"/.exec(line)?.[1] ?? '') > killedAt).length;
  t.diagnostic(`${termsEnded} terms ended towards the dead tail's host while its 6 s lease ran out`);
  assert.ok(termsEnded <= 10, `${termsEnded} step-downs towards a dead host`);
});
