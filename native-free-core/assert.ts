/**
 * Assertions stay on in production: a broken invariant in a replication engine must stop the
 * replica loudly rather than let it apply or acknowledge the wrong thing. Expected operating
 * conditions (full ring, stale epoch, bad input) are never asserted; they are returned as results.
 */
export class AssertionError extends Error {
  readonly code = 'DABBA_ERR_ASSERTION';
  constructor(message: string) {
    super(message);
    this.name = 'AssertionError';
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}
