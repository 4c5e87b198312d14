/**
 * Assertions the fuzzer reaches from input that are known and being fixed by another change right
 * now: the harness counts them (by reader and assertion message) instead of failing. Remove an
 * entry when its fix lands; the fuzzer then holds the fix in place. Listed here rather than in
 * test/codec-fuzz.test.ts because the CLI (npm run fuzz) uses the same list, and importing a test
 * file would run its tests.
 */
export interface KnownFinding {
  name: string;
  /** The reader (harness name, `role.door` for a node) whose call reached the assertion. */
  reader: RegExp;
  /** The assertion's message. */
  message: RegExp;
  /**
   * The assertion fires before the node changes anything, so the harness keeps the node (as it
   * will once the fix refuses the input instead); otherwise the node is replaced, as its replica
   * would stop.
   */
  nodeSurvives: boolean;
}

// Empty: every assertion the fuzzer reached from input is fixed, each with a regression test. A
// finding that cannot be fixed at once goes here (name, reader, assertion message) so the fuzzer
// counts it instead of failing, until its fix lands.
export const KNOWN_FINDINGS: readonly KnownFinding[] = [];
