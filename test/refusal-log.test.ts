/**
 * Refusals are counted by code and logged at a bounded rate: a peer sending garbage in a loop costs
 * a few log lines a second, and the next line says how many were held back.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RefusalLog } from '../src/host/refusal-log.js';

test('refusals are all counted, but each code logs at most 10 lines a second, then says how many it held back', () => {
  let now = 0;
  const log = new RefusalLog(() => now);
  const verdicts = Array.from({ length: 1000 }, () => log.note('DABBA_ERR_MALFORMED_FRAME'));
  assert.equal(verdicts.filter((verdict) => verdict !== null).length, 10);
  assert.deepEqual(verdicts.slice(0, 10), Array.from({ length: 10 }, () => ({ suppressed: 0 })));
  // Another code has its own allowance.
  assert.deepEqual(log.note('DABBA_ERR_UNAUTHENTICATED'), { suppressed: 0 });
  // A second later the next line says how many of the first code were held back.
  now += 1000;
  assert.deepEqual(log.note('DABBA_ERR_MALFORMED_FRAME'), { suppressed: 990 });
  assert.deepEqual(log.note('DABBA_ERR_MALFORMED_FRAME'), { suppressed: 0 });
  assert.deepEqual(log.totals(), { DABBA_ERR_MALFORMED_FRAME: 1002, DABBA_ERR_UNAUTHENTICATED: 1 });
});
