import { startLocalHosts } from './dist/bench/hosts/local-hosts.js';
import { connect } from './dist/src/client/index.js';
import { runClosedLoop } from './dist/src/load.js';
const hosts = await startLocalHosts(3);
const client = await connect({ hosts: hosts.urls, secret: hosts.secret });
await runClosedLoop(client, { durationMs: 500, writers: 4, writeWindow: 4096 });
const { head, tail } = client.stats();
const mid = hosts.urls.indexOf(head);
const samples = [];
const sampler = setInterval(() => samples.push([performance.now(), client.stats().writesAcknowledged]), 5);
let killedAt = 0;
setTimeout(() => { killedAt = performance.now(); console.log('KILL at', new Date().toISOString()); process.kill(hosts.pids[mid], 'SIGKILL'); }, 1000);
await runClosedLoop(client, { durationMs: 4000, writers: 4, writeWindow: 4096 });
clearInterval(sampler);
let last = -1, lastAt = 0;
for (const [at, c] of samples) { if (at < killedAt) continue; if (c !== last) { if (at - lastAt > 50 && last >= 0) console.log('gap', Math.round(lastAt - killedAt), '->', Math.round(at - killedAt)); last = c; lastAt = at; } }
for (const i of [0, 1, 2]) if (i !== mid) console.log(`--- host ${i}`, hosts.logs[i].join('').split('\n').filter((l) => l.includes('"time"') && !l.includes('peer-link-open') && l > '{"time":"' + new Date(Date.now() - 6000).toISOString()).slice(-25).join('\n'));
await client.close();
await hosts.stop();
