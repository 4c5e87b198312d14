/**
 * Watches across hosts: a remote client's watch and an HTTP server-sent-event stream (GET
 * /watch/:prefix) each see every acknowledged change under their prefix exactly once, in version
 * order, while the host their watch polls is killed (its streams poll another member) and the
 * chain is repaired. The event stream resumes without a gap from its Last-Event-ID. Three `dabba
 * serve` hosts (own network namespaces as root, loopback otherwise), one etcd.
 */
import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { after, test } from 'node:test';
import { startEtcdCluster } from '../src/bench/peers/etcd-cluster.js';
import { LocalServers } from '../src/bench/peers/servers.js';
import { isDabbaError, type RemoteClient, type WatchChange } from '../src/client/index.js';
import { closeHostTest, HostCluster } from './helpers/host-cluster.js';
import { createNetnsLab, type NetnsLab } from './helpers/netns-lab.js';

const SECRET = 'hosts-watches-secret-0123456789abcd';
const servers = new LocalServers('hosts-watches-test');
let lab: NetnsLab | undefined;
let cluster: HostCluster | undefined;

after(async () => {
  await closeHostTest(cluster, lab, servers);
});

interface ServerEvent {
  id: string;
  event: string;
  data: { key: string; value?: string; version: number; chain: number; code?: string };
}

/** Reads server-sent events from `url` until `done` says so (or `timeoutMs` passes); returns them. */
function readEvents(url: string, lastEventId: string | null, done: (events: ServerEvent[]) => boolean, timeoutMs = 30_000): Promise<ServerEvent[]> {
  return new Promise((resolve, reject) => {
    const events: ServerEvent[] = [];
    const headers: Record<string, string> = lastEventId === null ? {} : { 'last-event-id': lastEventId };
    const request = httpRequest(url, { headers }, (response: IncomingMessage) => {
      if (response.statusCode !== 200) return reject(new Error(`GET ${url}: ${response.statusCode}`));
      assert.equal(response.headers['content-type'], 'text/event-stream');
      let buffer = '';
      response.setEncoding('utf8').on('data', (text: string) => {
        buffer += text;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = new Map(block.split('\n').filter((line) => !line.startsWith(':')).map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 2)] as const));
          if (!fields.has('event')) continue;
          events.push({ id: fields.get('id') ?? '', event: fields.get('event')!, data: JSON.parse(fields.get('data')!) as ServerEvent['data'] });
          if (done(events)) {
            clearTimeout(timer);
            request.destroy();
            return resolve(events);
          }
        }
      });
    });
    const timer = setTimeout(() => {
      request.destroy();
      reject(new Error(`${events.length} events from ${url} in ${timeoutMs} ms`));
    }, timeoutMs);
    request.on('error', (error) => {
      if (!request.destroyed || events.length === 0) reject(error);
    });
    request.end();
  });
}

/** Puts `count` keys `prefix0..`, four at a time; returns those acknowledged. */
async function write(client: RemoteClient, prefix: string, count: number, onProgress?: (written: number) => Promise<void>): Promise<string[]> {
  const acknowledged: string[] = [];
  for (let start = 0; start < count; start += 4) {
    await Promise.all(Array.from({ length: Math.min(4, count - start) }, async (_, offset) => {
      const key = `${prefix}${start + offset}`;
      try {
        await client.put(key, `v${start + offset}`);
        acknowledged.push(key);
      } catch (error) {
        if (!isDabbaError(error, 'DABBA_ERR_OUTCOME_UNKNOWN')) throw error;
      }
    }));
    await onProgress?.(start + 4);
  }
  return acknowledged;
}

function checkOrder(versions: number[]): void {
  for (let index = 1; index < versions.length; index++) assert.ok(versions[index]! > versions[index - 1]!, `versions in order: ${versions[index - 1]} then ${versions[index]}`);
}

test('a remote watch and an event stream see every acknowledged change once, in order, through the kill of a host', { timeout: 180_000 }, async () => {
  lab = await createNetnsLab('dabwatch', 4);
  const etcd = await startEtcdCluster(servers, 1, await lab.addServerAddress());
  const hosts = await HostCluster.create(lab, etcd.clientUrls, `/dabba-watch-${process.pid}/`, SECRET, { zones: ['z1', 'z2', 'z3', 'z4'] });
  cluster = hosts;
  for (let index = 0; index < 4; index++) await hosts.start(index);
  await hosts.waitForFullChain();
  const writer = await hosts.connect();
  const watcher = await hosts.connect();
  const watch = watcher.watch('w:', { fromVersion: 1 });
  const seen: WatchChange[] = [];
  const missing = new Set<string>();
  let allWritten = false;
  let caughtUp: () => void = () => undefined;
  const watching = (async () => {
    for await (const change of watch) {
      seen.push(change);
      missing.delete(change.key.toString());
      if (allWritten && missing.size === 0) return caughtUp();
    }
  })();
  const caughtUpPromise = new Promise<void>((resolve) => (caughtUp = resolve));

  // A client's first watch stream polls the first member it reads from: the head's host.
  const victim = hosts.hostWithRole('head');
  const acknowledged = await write(writer, 'w:', 400, async (written) => {
    if (written === 200) await hosts.kill(victim);
  });
  for (const key of acknowledged) missing.add(key);
  for (const change of seen) missing.delete(change.key.toString());
  allWritten = true;
  if (missing.size === 0) caughtUp();
  await Promise.race([caughtUpPromise, new Promise((_, reject) => setTimeout(() => reject(new Error(`${missing.size} acknowledged changes never arrived, e.g. ${[...missing].slice(0, 3)}`)), 30_000))]);
  watch.close();
  await watching;
  checkOrder(seen.map((change) => change.version));
  assert.equal(new Set(seen.map((change) => change.key.toString())).size, seen.length, 'no change twice');
  assert.ok(seen.length >= acknowledged.length && seen.length <= 400, `${seen.length} changes for ${acknowledged.length} acknowledged writes of 400`);

  // The same history as server-sent events from a live host, in two parts joined by Last-Event-ID.
  const live = [0, 1, 2, 3].find((index) => index !== victim)!;
  const url = `${hosts.hosts[live]!.httpUrl}/watch/w%3A?from=1`;
  const firstPart = await readEvents(url, null, (events) => events.length === 150);
  const rest = await readEvents(url, firstPart.at(-1)!.id, (events) => events.length === seen.length - 150);
  const streamed = [...firstPart, ...rest];
  assert.deepEqual(streamed.map((event) => `${event.event} ${event.data.key}=${event.data.value}@${event.data.version}`), seen.map((change) => `${change.op} ${change.key}=${change.value}@${change.version}`));
  assert.match(firstPart.at(-1)!.id, /^0:[0-9]+$/);

  const badQuery = await hosts.request(live, '/watch/w%3A?from=x');
  assert.equal(badQuery.status, 400);
  await Promise.all([writer.close(), watcher.close()]);
});
