// The browser tests' harness: the built `wick` binary on the real test model (127.0.0.1, a free
// port, its own data dir, stopped by the test) and Debian's Chromium driven by playwright-core.
//
// WICK_BIN: the binary (default target/debug/wick); WICK_TEST_MODEL: the model (default
// models/SmolLM2-135M-Instruct.Q4_1.gguf); CHROMIUM: the browser (default /usr/bin/chromium).

import { spawn } from "node:child_process";
import { mkdtempSync, openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const MODEL_NAME = "smol";

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.on("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts `wick serve` with `args`; resolves once /health answers 200. */
export async function startServer(args = []) {
  const bin = process.env.WICK_BIN || join(ROOT, "target/debug/wick");
  const model = process.env.WICK_TEST_MODEL || join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf");
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "wick-browser-"));
  const log = join(dir, "wick.log");
  const out = openSync(log, "w");
  const proc = spawn(
    bin,
    ["serve", "--model", model, "--host", "127.0.0.1", "--port", String(port), "--served-model-name", MODEL_NAME,
      "--kv-cache-memory", "256MiB", "--data-dir", join(dir, "data"), ...args],
    { stdio: ["ignore", out, out], env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "wick=warn" } },
  );
  let exited = null;
  proc.on("exit", (code) => (exited = code));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (exited !== null) return;
    proc.kill("SIGTERM");
    for (let i = 0; i < 100 && exited === null; i++) await sleep(100);
    if (exited === null) proc.kill("SIGKILL");
  };
  for (let i = 0; i < 900; i++) {
    if (exited !== null) throw new Error(`wick exited with ${exited}:\n${readFileSync(log, "utf8")}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.status === 200) return { url, stop, dir, log };
    } catch {
      /* not up yet */
    }
    await sleep(200);
  }
  await stop();
  throw new Error(`wick did not become ready:\n${readFileSync(log, "utf8")}`);
}

/** Headless Chromium, each launch with a fresh profile of its own (Playwright's temp dir). */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"],
  });
}

/** A page that fails the test on a CSP violation or an uncaught error. */
export async function newPage(browser, opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 720 }, ...opts });
  const page = await ctx.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  return { ctx, page, problems };
}

/** The value of the first sample of `name` in the server's /metrics. */
export async function metric(url, name) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(name) && /^[\w:]+(\{[^}]*\})?\s/.test(l) && l.split(/[{\s]/)[0] === name);
  return line ? Number(line.trim().split(/\s+/).pop()) : NaN;
}

export async function waitFor(what, f, timeoutMs = 60_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/** axe-core's serious and critical findings on `page`'s URL (in a context that lets it in). */
export async function axeFindings(browser, url) {
  const { ctx, page } = await newPage(browser, { bypassCSP: true });
  await page.goto(url);
  await page.waitForSelector("#app > *");
  await page.waitForTimeout(500);
  await page.addScriptTag({ content: readFileSync(join(ROOT, "web/node_modules/axe-core/axe.min.js"), "utf8") });
  const results = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ["violations"] }));
  await ctx.close();
  return results.violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
}

export { sleep };
