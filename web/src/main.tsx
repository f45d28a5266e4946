// The page's shell: header (views, API key, theme), and the chat or the dashboard by hash
// (#/ or #/dashboard).

import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { getKey, setKey } from "./api";
import { Chat } from "./chat";
import { Dashboard } from "./dashboard";
import "./styles.css";

type Theme = "light" | "dark";

function initialTheme(): Theme {
  const saved = localStorage.getItem("wick.theme");
  if (saved === "light" || saved === "dark") return saved;
  return matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
}

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

/** The API key form; `prompt` when the server just refused the page with 401. */
function KeyForm(props: { prompt: boolean; onSaved: () => void }) {
  const [value, setValue] = useState(getKey());
  return (
    <form
      class={`flex items-center gap-2 ${props.prompt ? "rounded border border-amber-500 bg-amber-50 p-2 dark:bg-amber-950" : ""}`}
      onSubmit={(e) => {
        e.preventDefault();
        setKey(value.trim());
        props.onSaved();
      }}
    >
      {props.prompt && (
        <p role="alert" class="text-sm">
          This server needs an API key.
        </p>
      )}
      <label for="api-key" class="text-sm">
        API key
      </label>
      <input
        id="api-key"
        type="password"
        autocomplete="off"
        class="w-36 rounded border border-slate-400 bg-white px-2 py-1 text-sm dark:bg-slate-800"
        value={value}
        onInput={(e) => setValue((e.target as HTMLInputElement).value)}
      />
      <button type="submit" class="btn">
        Save key
      </button>
    </form>
  );
}

function App() {
  const hash = useHash();
  const [theme, setTheme] = useState<Theme>(initialTheme);
  const [needKey, setNeedKey] = useState(false);
  const [keyVersion, setKeyVersion] = useState(0);
  useEffect(() => {
    document.documentElement.classList.toggle("dark", theme === "dark");
    localStorage.setItem("wick.theme", theme);
  }, [theme]);
  const dashboard = hash.startsWith("#/dashboard");
  const onAuth = () => setNeedKey(true);
  return (
    <div class="flex h-full flex-col">
      <header class="flex flex-wrap items-center gap-3 border-b border-slate-300 px-3 py-2 dark:border-slate-700">
        <span class="font-semibold">wick</span>
        <nav aria-label="Views" class="flex gap-2">
          <a href="#/" class="navlink" aria-current={dashboard ? undefined : "page"}>
            Chat
          </a>
          <a href="#/dashboard" class="navlink" aria-current={dashboard ? "page" : undefined}>
            Dashboard
          </a>
        </nav>
        <div class="ml-auto flex flex-wrap items-center gap-2">
          <KeyForm
            prompt={needKey}
            onSaved={() => {
              setNeedKey(false);
              setKeyVersion((v) => v + 1);
            }}
          />
          <button
            type="button"
            class="btn"
            aria-label={`Switch to ${theme === "dark" ? "light" : "dark"} theme`}
            onClick={() => setTheme(theme === "dark" ? "light" : "dark")}
          >
            {theme === "dark" ? "Light" : "Dark"}
          </button>
        </div>
      </header>
      <main class="min-h-0 flex-1">
        {dashboard ? (
          <Dashboard key={`d${keyVersion}`} onAuth={onAuth} />
        ) : (
          <Chat key={`c${keyVersion}`} onAuth={onAuth} />
        )}
      </main>
    </div>
  );
}

const root = document.getElementById("app");
if (root) render(<App />, root);
