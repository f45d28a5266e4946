// Prometheus text (from /metrics) parsed into samples, and what the dashboard reads from them.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseProm(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3]) {
      for (const l of m[3].matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    }
    const v = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
    out.push({ name: m[1], labels, value: v });
  }
  return out;
}

/** The sum of every sample named `name`. */
export function total(s: Sample[], name: string): number {
  return s.filter((x) => x.name === name).reduce((a, x) => a + (Number.isFinite(x.value) ? x.value : 0), 0);
}

/** Cumulative histogram buckets (le -> count) of `name`, summed over labels other than le. */
export function buckets(s: Sample[], name: string): [number, number][] {
  const by = new Map<number, number>();
  for (const x of s) {
    if (x.name !== `${name}_bucket`) continue;
    const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
    by.set(le, (by.get(le) ?? 0) + x.value);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of a histogram's difference between two scrapes (null: no observations). */
export function quantile(now: [number, number][], before: [number, number][], q: number): number | null {
  const prev = new Map(before);
  const d = now.map(([le, c]) => [le, c - (prev.get(le) ?? 0)] as [number, number]);
  const count = d.length ? d[d.length - 1][1] : 0;
  if (count <= 0) return null;
  const rank = q * count;
  let lo = 0;
  let loCount = 0;
  for (const [le, c] of d) {
    if (c >= rank) {
      if (!Number.isFinite(le)) return lo;
      const span = c - loCount;
      return span > 0 ? lo + ((le - lo) * (rank - loCount)) / span : le;
    }
    lo = le;
    loCount = c;
  }
  return lo;
}
