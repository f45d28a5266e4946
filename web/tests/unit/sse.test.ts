import { describe, expect, it } from "vitest";
import { SseParser } from "../../src/sse";

describe("SseParser", () => {
  it("splits events across chunk boundaries, in any line ending", () => {
    const p = new SseParser();
    expect(p.push('event: response.output_text.delta\ndata: {"a"')).toEqual([]);
    expect(p.push(':1}\n\ndata: x\r\n\r')).toEqual([{ event: "response.output_text.delta", data: '{"a":1}' }]);
    // The \r\n pair split across chunks is one line end, not two.
    expect(p.push("\ndata: y\r\rdata: z\n")).toEqual([
      { event: "message", data: "x" },
      { event: "message", data: "y" },
    ]);
    expect(p.push("\n")).toEqual([{ event: "message", data: "z" }]);
  });

  it("joins data lines, skips comments and empty events, keeps one space only", () => {
    const p = new SseParser();
    expect(p.push(": ping\n\ndata:  two\ndata:three\n\nevent: x\n\n")).toEqual([
      { event: "message", data: " two\nthree" },
    ]);
  });
});
