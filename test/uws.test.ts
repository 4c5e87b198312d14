import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { loadUws } from '../src/transport/uws.js';

test('uWebSockets.js loads its native binary, not the JavaScript fallback', () => {
  const { uws, native, binary } = loadUws();
  assert.ok(native, `expected the native addon ${binary}`);
  // And it actually serves: listen on a loopback port chosen by the kernel, then close.
  const app = uws.App();
  let socket: unknown = null;
  app.listen('127.0.0.1', 0, (listenSocket) => {
    socket = listenSocket;
  });
  assert.ok(socket, 'uWS listened on 127.0.0.1');
  assert.ok(uws.us_socket_local_port(socket as never) > 0);
  uws.us_listen_socket_close(socket as never);
});

test('the fallback is detected when it is forced (UWS_USE_FALLBACK=1)', () => {
  const output = execFileSync(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', "import { loadUws } from './src/transport/uws.ts'; console.log('native=' + loadUws().native);"],
    { env: { ...process.env, UWS_USE_FALLBACK: '1' }, encoding: 'utf8' },
  );
  assert.match(output, /native=false/);
});
