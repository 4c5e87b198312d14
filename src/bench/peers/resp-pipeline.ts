/**
 * A minimal Redis connection for the benchmark's write loop: it sends a window of pre-encoded
 * commands in one write and counts the simple replies (+OK, :n, -ERR) that come back. A general
 * client spends several microseconds of Node CPU per command (a promise, a parser object, a
 * timer), which would make the peer look slower than Redis is; this costs about as much per
 * command as redis-benchmark does, so the comparison measures the servers. Only for commands
 * whose replies are simple strings, integers or errors (SET, WAIT).
 */
import { connect, type Socket } from 'node:net';

const CR = 13;
const LF = 10;

export class RespPipeline {
  private expected = 0;
  private received = 0;
  private partial = '';
  private settle: { resolve: (reply: string) => void; reject: (error: Error) => void } | null = null;

  private constructor(private readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.fail(error));
    socket.on('close', () => this.fail(new Error('redis connection closed')));
  }

  static open(host: string, port: number): Promise<RespPipeline> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port }, () => {
        socket.off('error', reject);
        resolve(new RespPipeline(socket));
      });
      socket.once('error', reject);
    });
  }

  /** Sends `commands` (RESP-encoded, `count` of them) and resolves with the last reply's text. */
  send(commands: Buffer, count: number): Promise<string> {
    if (this.settle !== null) throw new Error('RespPipeline: one window at a time');
    this.expected = count;
    this.received = 0;
    return new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
      this.socket.write(commands);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    let start = 0;
    for (let index = chunk.indexOf(LF, start); index >= 0; index = chunk.indexOf(LF, start)) {
      // One reply per line; its \r may have ended the previous chunk, so strip it from the joined line.
      let line = this.partial + chunk.toString('latin1', start, index);
      if (line.charCodeAt(line.length - 1) === CR) line = line.slice(0, -1);
      this.partial = '';
      start = index + 1;
      if (line.startsWith('-')) {
        this.fail(new Error(`redis replied ${line}`));
        return;
      }
      if (++this.received === this.expected && this.settle !== null) {
        const { resolve } = this.settle;
        this.settle = null;
        resolve(line);
      }
    }
    if (start < chunk.length) this.partial += chunk.toString('latin1', start);
  }

  private fail(error: Error): void {
    if (this.settle === null) return;
    const { reject } = this.settle;
    this.settle = null;
    reject(error);
  }
}

/** RESP encoding of one command, e.g. `respCommand(['SET', key, value])`. */
export function respCommand(parts: Array<string | Uint8Array>): Buffer {
  const pieces: Buffer[] = [Buffer.from(`*${parts.length}\r\n`)];
  for (const part of parts) {
    const bytes = typeof part === 'string' ? Buffer.from(part) : Buffer.from(part.buffer, part.byteOffset, part.byteLength);
    pieces.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(pieces);
}
