/**
 * A reader of the Prometheus text format (version 0.0.4) for tests: each sample with its labels,
 * and each metric's TYPE. Strict: a line it cannot read fails the test.
 */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface PromText {
  samples: PromSample[];
  types: Map<string, string>;
  /** The value of the one sample of `name` whose labels include `labels`; throws if there is not exactly one. */
  value(name: string, labels?: Record<string, string>): number;
  /** Every sample of `name` whose labels include `labels`. */
  all(name: string, labels?: Record<string, string>): PromSample[];
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g;

export function parsePromText(text: string): PromText {
  const samples: PromSample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name!, type!);
      continue;
    }
    const match = SAMPLE.exec(line);
    if (match === null) throw new Error(`not a Prometheus text line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const [, name, value] of (match[2] ?? '').matchAll(LABEL)) labels[name!] = value!.replace(/\\(.)/g, (_, char: string) => (char === 'n' ? '\n' : char));
    // As Prometheus reads them (Go's ParseFloat): NaN and Inf in any case (prom-client writes "Nan").
    const text = match[3]!.toLowerCase();
    const value = text === '+inf' || text === 'inf' ? Number.POSITIVE_INFINITY : text === '-inf' ? Number.NEGATIVE_INFINITY : Number(match[3]);
    if (Number.isNaN(value) && text !== 'nan') throw new Error(`not a number in ${JSON.stringify(line)}`);
    samples.push({ name: match[1]!, labels, value });
  }
  const all = (name: string, labels: Record<string, string> = {}): PromSample[] =>
    samples.filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value));
  return {
    samples,
    types,
    all,
    value(name, labels = {}) {
      const found = all(name, labels);
      if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
      return found[0]!.value;
    },
  };
}
