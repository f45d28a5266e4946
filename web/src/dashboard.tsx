// The dashboard: live load from /metrics (polled every 2 s, charts drawn with uPlot) and usage
// by key and model per day from /v1/usage. Shown to an admin key, or to all on an open server.

import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import { api, ApiError, authHeaders, errorOf } from "./api";
import { buckets, parseProm, quantile, total, type Sample } from "./metrics";

const POLL_MS = 2000;
const POINTS = 90;
const TTFT = "wick_time_to_first_token_seconds";

interface Point {
  t: number;
  running: number;
  waiting: number;
  kvPct: number;
  tokPerSec: number;
  p50: number | null;
  p90: number | null;
  p99: number | null;
  generated: number;
}

function Chart(props: { title: string; series: string[]; data: (number | null)[][]; unit: string }) {
  const el = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    if (!el.current) return;
    const colors = ["#2563eb", "#dc2626", "#16a34a"];
    plot.current = new uPlot(
      {
        width: Math.min(520, el.current.clientWidth || 320),
        height: 160,
        series: [{}, ...props.series.map((label, i) => ({ label, stroke: colors[i % 3], width: 2 }))],
        axes: [{ stroke: "#64748b" }, { stroke: "#64748b", label: props.unit }],
      },
      props.data as uPlot.AlignedData,
      el.current,
    );
    return () => plot.current?.destroy();
  }, []);
  useEffect(() => plot.current?.setData(props.data as uPlot.AlignedData), [props.data]);
  const last = props.series.map((s, i) => {
    const v = props.data[i + 1]?.[props.data[i + 1].length - 1];
    return `${s}: ${v == null ? "–" : Number(v).toFixed(v < 10 ? 2 : 0)}`;
  });
  return (
    <figure class="rounded border border-slate-300 p-2 dark:border-slate-700">
      <figcaption class="text-sm font-medium">{props.title}</figcaption>
      <div ref={el} role="img" aria-label={`${props.title}: ${last.join(", ")}`} />
      <p class="text-xs" data-testid={`now-${props.title}`}>
        Now: {last.join(", ")}
      </p>
    </figure>
  );
}

function point(now: Sample[], before: { t: number; s: Sample[] } | null, history: Sample[][], t: number): Point {
  const kvTotal = total(now, "wick_kv_blocks_total");
  const gen = total(now, "wick_generation_tokens_total");
  const dt = before ? (t - before.t) / 1000 : 0;
  const tokPerSec = before && dt > 0 ? Math.max(0, gen - total(before.s, "wick_generation_tokens_total")) / dt : 0;
  // TTFT percentiles over the last minute of scrapes.
  const old = history[0] ?? [];
  const b = buckets(now, TTFT);
  const q = (x: number) => {
    const v = quantile(b, buckets(old, TTFT), x);
    return v == null ? null : v * 1000;
  };
  return {
    t: t / 1000,
    running: total(now, "wick_requests_running"),
    waiting: total(now, "wick_requests_waiting"),
    kvPct: kvTotal > 0 ? (100 * total(now, "wick_kv_blocks_used")) / kvTotal : 0,
    tokPerSec,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    generated: gen,
  };
}

function useMetrics(onAuth: () => void): [Point[], string] {
  const [points, setPoints] = useState<Point[]>([]);
  const [err, setErr] = useState("");
  useEffect(() => {
    let prev: { t: number; s: Sample[] } | null = null;
    const history: Sample[][] = [];
    let stop = false;
    const tick = async () => {
      try {
        const r = await fetch("/metrics", { headers: authHeaders() });
        if (!r.ok) throw await errorOf(r);
        const s = parseProm(await r.text());
        const t = Date.now();
        const p = point(s, prev, history, t);
        history.push(s);
        if (history.length > 30) history.shift();
        prev = { t, s };
        setPoints((ps) => [...ps.slice(-(POINTS - 1)), p]);
        setErr("");
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) onAuth();
        setErr((e as Error).message);
      }
      if (!stop) timer = setTimeout(tick, POLL_MS);
    };
    let timer = setTimeout(tick, 0);
    return () => {
      stop = true;
      clearTimeout(timer);
    };
  }, []);
  return [points, err];
}

interface UsageRow {
  key?: string;
  model?: string;
  day?: string;
  requests: number;
  total_tokens: number;
}

const DAYS = 7;

/** Per day of the last week, the totals by key and by model. */
async function loadUsage(): Promise<{ day: string; by: string; name: string; requests: number; tokens: number }[]> {
  const rows = [];
  const today = Math.floor(Date.now() / 86_400_000) * 86_400;
  for (let d = DAYS - 1; d >= 0; d--) {
    const start = today - d * 86_400;
    const day = new Date(start * 1000).toISOString().slice(0, 10);
    for (const by of ["key", "model"] as const) {
      const r = await api<{ data: UsageRow[] }>(`/v1/usage?group_by=${by}&start=${start}&end=${start + 86_400}`);
      for (const x of r.data) rows.push({ day, by, name: String(x[by] ?? "(none)"), requests: x.requests, tokens: x.total_tokens });
    }
  }
  return rows;
}

export function Dashboard(props: { onAuth: () => void }) {
  const [usage, setUsage] = useState<Awaited<ReturnType<typeof loadUsage>> | null>(null);
  const [denied, setDenied] = useState("");
  const [points, err] = useMetrics(props.onAuth);
  useEffect(() => {
    const load = () =>
      loadUsage().then(setUsage, (e: ApiError) => {
        if (e.status === 401) props.onAuth();
        setDenied(e.status === 403 ? "The dashboard needs an admin key." : `Usage: ${e.message}`);
      });
    load();
    const t = setInterval(load, 15_000);
    return () => clearInterval(t);
  }, []);
  if (denied.startsWith("The dashboard")) return <p class="p-4" role="alert">{denied}</p>;
  const col = (f: (p: Point) => number | null) => points.map(f);
  const t = col((p) => p.t);
  return (
    <div class="h-full overflow-y-auto p-3" tabIndex={0} aria-label="Dashboard">
      <h1 class="mb-2 text-lg font-semibold">Dashboard</h1>
      {err && <p role="alert" class="text-sm text-red-700 dark:text-red-300">Metrics: {err}</p>}
      <p class="mb-2 text-sm" data-testid="generated-total">
        Generated tokens since start: {points.length ? points[points.length - 1].generated : 0}
      </p>
      <div class="grid gap-3 md:grid-cols-2">
        <Chart title="Requests" unit="requests" series={["running", "waiting"]} data={[t, col((p) => p.running), col((p) => p.waiting)]} />
        <Chart title="KV cache use" unit="%" series={["used %"]} data={[t, col((p) => p.kvPct)]} />
        <Chart title="Generated tokens per second" unit="tok/s" series={["tok/s"]} data={[t, col((p) => p.tokPerSec)]} />
        <Chart title="Time to first token" unit="ms" series={["p50", "p90", "p99"]} data={[t, col((p) => p.p50), col((p) => p.p90), col((p) => p.p99)]} />
      </div>
      <h2 class="mt-4 mb-2 font-semibold">Usage per day (last {DAYS} days)</h2>
      {denied && <p class="text-sm">{denied}</p>}
      {usage && (
        <table class="text-sm" data-testid="usage">
          <thead>
            <tr>
              <th scope="col" class="pr-4 text-left">Day</th>
              <th scope="col" class="pr-4 text-left">By</th>
              <th scope="col" class="pr-4 text-left">Name</th>
              <th scope="col" class="pr-4 text-right">Requests</th>
              <th scope="col" class="text-right">Tokens</th>
            </tr>
          </thead>
          <tbody>
            {usage.map((r) => (
              <tr key={`${r.day}-${r.by}-${r.name}`}>
                <td class="pr-4">{r.day}</td>
                <td class="pr-4">{r.by}</td>
                <td class="pr-4">{r.name}</td>
                <td class="pr-4 text-right">{r.requests}</td>
                <td class="text-right">{r.tokens}</td>
              </tr>
            ))}
            {usage.length === 0 && (
              <tr>
                <td colSpan={5}>No usage recorded yet.</td>
              </tr>
            )}
          </tbody>
        </table>
      )}
    </div>
  );
}
