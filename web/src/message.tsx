// One message: markdown with highlighted code and copy buttons, its figures, its error.

import { useMemo } from "preact/hooks";
import { renderMarkdown } from "./markdown";
import { errorText, type Msg } from "./state";

function figures(m: Msg): string {
  const s = m.stats;
  if (!s) return "";
  const parts: string[] = [];
  if (s.outputTokens != null) parts.push(`${s.outputTokens} tokens`);
  if (s.ttftMs != null) parts.push(`TTFT ${Math.round(s.ttftMs)} ms`);
  if (s.tokPerSec != null) parts.push(`${s.tokPerSec.toFixed(1)} tok/s`);
  return parts.join(" · ");
}

/** Copies the code of the block whose Copy button was clicked (one listener for all). */
export function onCopyClick(e: MouseEvent) {
  const btn = (e.target as HTMLElement).closest("button[data-copy]");
  const code = btn?.closest(".codeblock")?.querySelector("code");
  if (!btn || !code) return;
  navigator.clipboard?.writeText(code.textContent ?? "").then(
    () => (btn.textContent = "Copied"),
    () => (btn.textContent = "Copy failed"),
  );
}

export function Message(props: { m: Msg; actions?: preact.ComponentChildren }) {
  const { m } = props;
  const html = useMemo(() => (m.role === "assistant" ? renderMarkdown(m.text) : ""), [m.text, m.role]);
  const mine = m.role === "user";
  return (
    <article
      class={`max-w-[85ch] rounded-lg px-3 py-2 ${mine ? "ml-auto bg-blue-100 dark:bg-blue-950" : "bg-slate-100 dark:bg-slate-800"}`}
      data-role={m.role}
      data-status={m.status}
      aria-label={mine ? "You said" : "Assistant replied"}
    >
      {mine ? (
        <p class="whitespace-pre-wrap">{m.text}</p>
      ) : (
        <div class="prose-msg break-words" dangerouslySetInnerHTML={{ __html: html }} />
      )}
      {m.status === "streaming" && !m.text && <p class="text-sm italic">Thinking…</p>}
      {m.status === "cancelled" && <p class="text-xs italic">Stopped.</p>}
      {m.status === "incomplete" && <p class="text-xs italic">Cut short (max output tokens).</p>}
      {m.error && (
        <p role="alert" class="mt-1 text-sm text-red-700 dark:text-red-300" data-testid="error">
          {errorText(m.error)}
        </p>
      )}
      {m.stats && (
        <p class="mt-1 text-xs text-slate-700 dark:text-slate-300" data-testid="figures">
          {figures(m)}
        </p>
      )}
      {props.actions && <div class="mt-1 flex gap-2">{props.actions}</div>}
    </article>
  );
}
