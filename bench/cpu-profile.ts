/**
 * Reads V8 .cpuprofile files (what `node --cpu-prof` writes): self time per function, the first
 * thing to look at in a profile.
 */

export interface CpuProfile {
  nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
  samples: number[];
  /** Microseconds since the previous sample, one per sample. */
  timeDeltas: number[];
}

export interface SelfTimeRow {
  /** Function name and where it is (file:line), or a V8 pseudo-frame such as (garbage collector). */
  name: string;
  selfMs: number;
  percent: number;
}

/** The `count` functions with the most self time, over every sample of the profile. */
export function topSelfTime(profile: CpuProfile, count: number): SelfTimeRow[] {
  const nameOf = new Map<number, string>();
  for (const node of profile.nodes) {
    const { functionName, url, lineNumber } = node.callFrame;
    const file = url === '' ? '' : ` ${url.slice(url.lastIndexOf('/') + 1)}:${lineNumber + 1}`;
    nameOf.set(node.id, `${functionName === '' ? '(anonymous)' : functionName}${file}`);
  }
  const selfUs = new Map<string, number>();
  let totalUs = 0;
  profile.samples.forEach((nodeId, index) => {
    const delta = profile.timeDeltas[index] ?? 0;
    const name = nameOf.get(nodeId) ?? '(unknown)';
    selfUs.set(name, (selfUs.get(name) ?? 0) + delta);
    totalUs += delta;
  });
  return [...selfUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([name, us]) => ({ name, selfMs: us / 1000, percent: totalUs === 0 ? 0 : (100 * us) / totalUs }));
}
