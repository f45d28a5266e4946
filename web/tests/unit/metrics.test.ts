import { describe, expect, it } from "vitest";
import { buckets, parseProm, quantile, total } from "../../src/metrics";

const text = `# HELP wick_requests_running Sequences running in the engine.
# TYPE wick_requests_running gauge
wick_requests_running{model="m"} 2
wick_generation_tokens_total{model="m",key="a b"} 10
wick_generation_tokens_total{model="m",key="say \\"hi\\""} 5
wick_time_to_first_token_seconds_bucket{model="m",le="0.1"} 4
wick_time_to_first_token_seconds_bucket{model="m",le="0.5"} 8
wick_time_to_first_token_seconds_bucket{model="m",le="+Inf"} 10
`;

describe("Prometheus text", () => {
  it("parses samples with labels, escapes included", () => {
    const s = parseProm(text);
    expect(total(s, "wick_requests_running")).toBe(2);
    expect(total(s, "wick_generation_tokens_total")).toBe(15);
    expect(s.find((x) => x.labels.key === 'say "hi"')?.value).toBe(5);
  });
  it("histogram quantiles interpolate within a bucket, over the difference of two scrapes", () => {
    const b = buckets(parseProm(text), "wick_time_to_first_token_seconds");
    expect(b).toEqual([[0.1, 4], [0.5, 8], [Infinity, 10]]);
    expect(quantile(b, [], 0.2)).toBeCloseTo(0.05);
    expect(quantile(b, [], 0.6)).toBeCloseTo(0.3);
    // Past the last finite bucket: its bound.
    expect(quantile(b, [], 0.99)).toBe(0.5);
    expect(quantile(b, b, 0.5)).toBeNull();
    // Since [4, 4, 4]: [0, 4, 6]; the median, 3 of 6, is 3/4 into (0.1, 0.5].
    expect(quantile(b, [[0.1, 4], [0.5, 4], [Infinity, 4]], 0.5)).toBeCloseTo(0.4);
  });
});
