// A pure Server-Sent Events parser: feed it text as it arrives, get each event's data.

export interface SseEvent {
  event: string;
  data: string;
}

export class SseParser {
  private buf = "";
  private data: string[] = [];
  private event = "";

  /** Parses `chunk` and returns the events it completed. */
  push(chunk: string): SseEvent[] {
    this.buf += chunk;
    const out: SseEvent[] = [];
    for (;;) {
      const nl = this.buf.search(/\r\n|\r|\n/);
      if (nl < 0) break;
      const sep = this.buf.startsWith("\r\n", nl) ? 2 : 1;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (this.buf[nl] === "\r" && sep === 1 && nl === this.buf.length - 1) break;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + sep);
      this.line(line, out);
    }
    return out;
  }

  private line(line: string, out: SseEvent[]): void {
    if (line === "") {
      if (this.data.length) out.push({ event: this.event || "message", data: this.data.join("\n") });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
  }
}
