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

export const KNOWN_FINDINGS: readonly KnownFinding[] = [
  // Being fixed: a found value longer than the read reply's payload. The harness's nodes have a
  // reply payload larger than any frame it makes, so this should not be reached at all.
  { name: 'read reply value larger than the reply', reader: /\.receiveReads$/, message: /^addFound: reply is full$/, nodeSurvives: false },
  // Being fixed: a snapshot record's version (a float64 on the wire) that is not a safe integer.
  {
    name: 'snapshot version not a safe integer',
    reader: /^(SnapshotView\.applyTo|joiner\.receiveSnapshot)$/,
    message: /^Store\.put: version is not a safe integer >= 0$/,
    // Records before the bad one are already in the store.
    nodeSurvives: false,
  },
  // Being fixed: a Hello claiming more than this node has applied (one from a newer epoch is kept
  // and applied when the node is reconfigured into that epoch, so it reaches the assertion there).
  { name: 'hello beyond applied (I1)', reader: /\.(receiveHello|reconfigure)$/, message: /^I1: successor applied \d+ beyond \d+$/, nodeSurvives: true },
  // Being fixed: an Ack for more than this node has forwarded.
  { name: 'ack beyond forwarded', reader: /\.receiveAck$/, message: /^ack \d+ beyond forwarded \d+$/, nodeSurvives: true },
];
