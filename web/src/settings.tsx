// The reply settings: model, system prompt, temperature, top_p, max output tokens (kept in
// localStorage).

export interface Settings {
  model: string;
  system: string;
  temperature: string;
  top_p: string;
  max_output_tokens: string;
}

const STORE = "wick.settings";

export function loadSettings(): Settings {
  const base: Settings = { model: "", system: "", temperature: "", top_p: "", max_output_tokens: "512" };
  try {
    return { ...base, ...JSON.parse(localStorage.getItem(STORE) ?? "{}") };
  } catch {
    return base;
  }
}

export function saveSettings(s: Settings) {
  try {
    localStorage.setItem(STORE, JSON.stringify(s));
  } catch {
    /* not kept */
  }
}

/** The request fields the settings set (blank: the server's default). */
export function requestFields(s: Settings) {
  const num = (v: string) => (v.trim() === "" || Number.isNaN(Number(v)) ? undefined : Number(v));
  return {
    instructions: s.system.trim() || undefined,
    temperature: num(s.temperature),
    top_p: num(s.top_p),
    max_output_tokens: num(s.max_output_tokens),
  };
}

export function SettingsPanel(p: { s: Settings; models: string[]; onChange: (s: Settings) => void }) {
  const set = (k: keyof Settings) => (e: Event) => p.onChange({ ...p.s, [k]: (e.target as HTMLInputElement).value });
  const num = (k: keyof Settings, label: string, step: string, min: string, max?: string) => (
    <label class="flex flex-col text-xs">
      {label}
      <input type="number" class="field w-24" step={step} min={min} max={max} value={p.s[k]} onInput={set(k)} placeholder="default" />
    </label>
  );
  return (
    <details class="border-b border-slate-300 px-3 py-1 dark:border-slate-700">
      <summary class="cursor-pointer text-sm">Settings</summary>
      <div class="flex flex-wrap items-end gap-3 py-2">
        <label class="flex flex-col text-xs">
          Model
          <select class="field" value={p.s.model} onChange={set("model")}>
            {p.models.map((m) => (
              <option key={m} value={m}>
                {m}
              </option>
            ))}
          </select>
        </label>
        {num("temperature", "Temperature", "0.1", "0", "2")}
        {num("top_p", "Top p", "0.05", "0", "1")}
        {num("max_output_tokens", "Max output tokens", "1", "1")}
        <label class="flex w-full flex-col text-xs">
          System prompt
          <textarea class="field" rows={2} value={p.s.system} onInput={set("system")} />
        </label>
      </div>
    </details>
  );
}
