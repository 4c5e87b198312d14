/**
 * A child process for test/durability.test.ts: opens a durable chain in the directory and mode it is
 * given (argv: directory, durability, chains, first write number) and writes under load until it
 * is killed, 1024 writes in flight, each to a key of its own (`w<n>` = `v<n>`). As each write's
 * promise resolves it prints the write's number on stdout (a pipe: written synchronously), so the
 * parent knows every acknowledged write when it kills the process.
 */
import { createChain, type ChainOptions } from '../../src/index.js';

const [directory, durability, chains, first] = process.argv.slice(2);
const chain = createChain({ dataDir: directory!, durability: durability as ChainOptions['durability'], chains: Number(chains), closeTimeoutMs: 0 });
chain.on('warning', (warning: Error) => process.stderr.write(`warning: ${warning.message}\n`));
const IN_FLIGHT = 1024;
let next = Number(first);
let acknowledged: number[] = [];

function flush(): void {
  if (acknowledged.length === 0) return;
  process.stdout.write(`${acknowledged.join('\n')}\n`);
  acknowledged = [];
}

function writeOne(): void {
  const number = next++;
  chain.put(`w${number}`, `v${number}`).then(
    () => {
      acknowledged.push(number);
      // Reported in this turn's microtasks, before anything else can run: as they happen.
      if (acknowledged.length === 1) queueMicrotask(flush);
      writeOne();
    },
    (error: unknown) => {
      process.stderr.write(`write ${number} failed: ${String(error)}\n`);
      process.exit(1);
    },
  );
}

for (let index = 0; index < IN_FLIGHT; index++) writeOne();
