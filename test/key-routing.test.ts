/**
 * Keys to chains (native-free-core/master/key-routing.ts): fixed values, so a change that would move
 * keys between chains in a running cluster fails here, and an even spread.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chainOf, chainOfAscii } from '../native-free-core/master/key-routing.js';
import { mulberry32 } from './helpers/prng.js';

const text = new TextEncoder();
const route = (key: string, chains: number): number => {
  const bytes = text.encode(key);
  return chainOf(bytes, 0, bytes.length, chains);
};

test('a key maps to the same chain everywhere and always (pinned values)', () => {
  assert.deepEqual(
    ['user:1', 'user:2', 'k', 'a-much-longer-key-of-forty-bytes-or-so!!'].map((key) => route(key, 64)),
    PINNED,
  );
  assert.equal(route('anything', 1), 0);
});

test('keys spread evenly over chains (100,000 keys over 64 chains: every chain within 10 % of its share)', () => {
  const counts = new Array<number>(64).fill(0);
  for (let index = 0; index < 100_000; index++) counts[route(`key-${index}`, 64)]!++;
  const share = 100_000 / 64;
  for (const [chain, count] of counts.entries()) assert.ok(Math.abs(count - share) < share * 0.1, `chain ${chain}: ${count} keys, share ${share}`);
});

test('an ASCII string routes without encoding, exactly as its UTF-8 bytes; any other string asks for the bytes', () => {
  const random = mulberry32(12);
  for (let round = 0; round < 5_000; round++) {
    const length = Math.floor(random() * 40);
    const key = Array.from({ length }, () => String.fromCharCode(Math.floor(random() * 128))).join('');
    for (const chains of [1, 7, 64]) assert.equal(chainOfAscii(key, chains), route(key, chains), JSON.stringify(key));
  }
  assert.equal(chainOfAscii('user:é', 64), -1);
  assert.equal(chainOfAscii('डब्बा', 64), -1);
  assert.equal(chainOfAscii('डब्बा', 1), 0);
});

const PINNED = [9, 7, 56, 30];
