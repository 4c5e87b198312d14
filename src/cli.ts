#!/usr/bin/env node
/**
 * The dabba command line.
 *   dabba demo [--replicas N] [--seconds S] [--value-bytes B] [--readers R]
 */
import { parseArgs } from 'node:util';
import { runDemo } from './demo.js';

const usage = `usage: dabba <command> [options]

commands:
  demo    run a replicated chain in this process under load and print a report
          --replicas N (3)  --seconds S (10)  --value-bytes B (100)  --readers R (1)
`;

function positiveInteger(text: string | undefined, name: string, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new RangeError(`--${name} must be a non-negative integer, got ${text}`);
  return value;
}

async function main(argv: string[]): Promise<number> {
  const [command = 'demo', ...rest] = argv;
  switch (command) {
    case 'demo': {
      const { values } = parseArgs({
        args: rest,
        options: {
          replicas: { type: 'string' },
          seconds: { type: 'string' },
          'value-bytes': { type: 'string' },
          readers: { type: 'string' },
        },
      });
      const ok = await runDemo({
        replicas: positiveInteger(values.replicas, 'replicas', 3),
        seconds: positiveInteger(values.seconds, 'seconds', 10),
        valueBytes: positiveInteger(values['value-bytes'], 'value-bytes', 100),
        readers: positiveInteger(values.readers, 'readers', 1),
      });
      return ok ? 0 : 1;
    }
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(usage);
      return 0;
    default:
      process.stderr.write(`unknown command: ${command}\n${usage}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  },
);
