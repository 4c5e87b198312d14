/** `dabba demo --http 127.0.0.1:0` as a child process, and where it serves (from the line it prints first). */
import { spawn } from 'node:child_process';
import { once } from 'node:events';

export interface DemoProcess {
  /** The address it serves on, http://127.0.0.1:PORT (no trailing slash). */
  base: string;
  /** Everything it printed so far. */
  output(): string;
  /** Its exit code, once it exits. */
  exited: Promise<number | null>;
  kill(): void;
}

export async function startHttpDemo(seconds: number): Promise<DemoProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'demo', '--seconds', String(seconds), '--http', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  let output = '';
  child.stdout.setEncoding('utf8');
  const base = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (chunk: string) => {
      output += chunk;
      const match = /status page at (http:\/\/\S+)\/ and metrics at \S+ while the demo runs/.exec(output);
      if (match !== null) resolve(match[1]!);
    });
    child.once('exit', () => reject(new Error(`the demo ended without saying where it serves: ${output}`)));
  });
  return { base, output: () => output, exited, kill: () => child.kill('SIGKILL') };
}
