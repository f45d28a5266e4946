// The chat view: the server's conversations, the open one's messages, the composer. A reply
// streams through `startTurn`; stop, regenerate, edit-and-resend and retry redo the last turn.

import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, conversations, models as listModels, type Conversation } from "./api";
import { Message, onCopyClick } from "./message";
import { loadSettings, requestFields, saveSettings, SettingsPanel, type Settings } from "./settings";
import { Sidebar } from "./sidebar";
import { applyEvent, itemsToMessages, lastTurnItemIds, newKey, titleFromText, type Msg } from "./state";
import { startTurn, type Turn } from "./stream";

export function Chat(props: { onAuth: () => void }) {
  const [convs, setConvs] = useState<Conversation[]>([]);
  const [search, setSearch] = useState("");
  const [current, setCurrent] = useState<string | null>(null);
  const [msgs, setMsgs] = useState<Msg[]>([]);
  const [text, setText] = useState("");
  const [editing, setEditing] = useState(false);
  const [settings, setSettings] = useState<Settings>(loadSettings);
  const [modelIds, setModelIds] = useState<string[]>([]);
  const [notice, setNotice] = useState("");
  const [showList, setShowList] = useState(false);
  const turn = useRef<Turn | null>(null);
  const box = useRef<HTMLTextAreaElement>(null);
  const streaming = msgs.some((m) => m.status === "streaming");

  const fail = (e: unknown) => {
    if (e instanceof ApiError && e.status === 401) props.onAuth();
    setNotice(e instanceof Error ? e.message : String(e));
  };
  const refresh = (s = search) =>
    conversations.list(s).then((p) => setConvs(p.data), fail);

  useEffect(() => {
    listModels().then((r) => {
      const ids = r.data.map((m) => m.id);
      setModelIds(ids);
      setSettings((s) => (ids.includes(s.model) ? s : { ...s, model: ids[0] ?? "" }));
    }, fail);
  }, []);
  useEffect(() => {
    const t = setTimeout(() => refresh(search), 200);
    return () => clearTimeout(t);
  }, [search]);
  useEffect(() => saveSettings(settings), [settings]);
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => e.key === "Escape" && turn.current?.cancel();
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, []);

  const open = async (id: string) => {
    turn.current?.cancel();
    setCurrent(id);
    setShowList(false);
    setNotice("");
    try {
      setMsgs(itemsToMessages(await conversations.items(id)));
    } catch (e) {
      fail(e);
    }
  };

  /** Streams a reply to `input` in conversation `id` into a new assistant message. */
  const reply = (id: string, input: string) => {
    const key = newKey();
    const startedAt = performance.now();
    setMsgs((ms) => [
      ...ms,
      { key: newKey(), role: "user", text: input, status: "done" },
      { key, role: "assistant", text: "", status: "streaming", startedAt },
    ]);
    const req = { model: settings.model, input, conversation: id, ...requestFields(settings) };
    turn.current = startTurn(req, (ev) => {
      const now = performance.now();
      setMsgs((ms) => ms.map((m) => (m.key === key ? applyEvent(m, ev, now) : m)));
      if (ev.type === "error" && ev.error.status === 401) props.onAuth();
      if (ev.type !== "delta") {
        turn.current = null;
        refresh();
      }
    });
  };

  /** Drops the last turn here and, when it was stored, on the server. */
  const dropLastTurn = async (stored: boolean) => {
    if (stored && current) {
      const ids = lastTurnItemIds(await conversations.items(current));
      for (const i of ids) await conversations.deleteItem(current, i);
    }
    const lastUser = msgs.map((m) => m.role).lastIndexOf("user");
    setMsgs((ms) => ms.slice(0, lastUser < 0 ? ms.length : lastUser));
    return lastUser < 0 ? "" : msgs[lastUser].text;
  };

  const send = async () => {
    const input = text.trim();
    if (!input || streaming) return;
    try {
      if (editing) await dropLastTurn(true);
      let id = current;
      if (!id) {
        const c = await conversations.create(titleFromText(input));
        id = c.id;
        setCurrent(id);
      }
      setText("");
      setEditing(false);
      setNotice("");
      reply(id, input);
    } catch (e) {
      fail(e);
    }
  };

  const redo = async (stored: boolean) => {
    try {
      const input = await dropLastTurn(stored);
      if (input && current) reply(current, input);
    } catch (e) {
      fail(e);
    }
  };

  const last = msgs[msgs.length - 1];
  const actions = (m: Msg) => {
    if (m !== last || m.role !== "assistant" || streaming) return undefined;
    const stored = m.status === "done" || m.status === "incomplete";
    return (
      <>
        <button type="button" class="btn" onClick={() => redo(stored)}>
          {stored ? "Regenerate" : "Retry"}
        </button>
        {stored && (
          <button
            type="button"
            class="btn"
            onClick={() => {
              const u = [...msgs].reverse().find((x) => x.role === "user");
              setText(u?.text ?? "");
              setEditing(true);
              box.current?.focus();
            }}
          >
            Edit last message
          </button>
        )}
      </>
    );
  };

  return (
    <div class="flex h-full">
      <aside
        class={`${showList ? "fixed inset-0 z-10 block bg-white dark:bg-slate-900" : "hidden"} w-full border-r border-slate-300 sm:static sm:block sm:w-64 dark:border-slate-700`}
      >
        <Sidebar
          convs={convs}
          current={current}
          search={search}
          onSearch={setSearch}
          onOpen={open}
          onClose={() => setShowList(false)}
          onNew={() => {
            turn.current?.cancel();
            setCurrent(null);
            setMsgs([]);
            setShowList(false);
            box.current?.focus();
          }}
          onRename={(id, title) => conversations.rename(id, { title }).then(() => refresh(), fail)}
          onDelete={(id) =>
            conversations.remove(id).then(() => {
              if (id === current) {
                setCurrent(null);
                setMsgs([]);
              }
              refresh();
            }, fail)
          }
        />
      </aside>
      <section class="flex min-w-0 flex-1 flex-col" aria-label="Chat">
        <div class="flex items-center gap-2 px-3 py-1 sm:hidden">
          <button type="button" class="btn" onClick={() => setShowList(true)}>
            Conversations
          </button>
        </div>
        <SettingsPanel s={settings} models={modelIds} onChange={setSettings} />
        <div class="min-h-0 flex-1 space-y-3 overflow-y-auto p-3" aria-live="polite" data-testid="messages" tabIndex={0} onClick={onCopyClick}>
          {msgs.length === 0 && <p class="text-slate-600 dark:text-slate-300">Ask something to start a conversation.</p>}
          {msgs.map((m) => (
            <Message key={m.key} m={m} actions={actions(m)} />
          ))}
        </div>
        {notice && (
          <p role="alert" class="px-3 text-sm text-red-700 dark:text-red-300">
            {notice}
          </p>
        )}
        <form
          class="flex items-end gap-2 border-t border-slate-300 p-3 dark:border-slate-700"
          onSubmit={(e) => {
            e.preventDefault();
            send();
          }}
        >
          <label for="composer" class="sr-only">
            Message
          </label>
          <textarea
            id="composer"
            ref={box}
            rows={2}
            class="field min-h-[2.5rem] flex-1 resize-y"
            placeholder={editing ? "Edit your last message" : "Message (Enter sends, Shift+Enter: new line, Esc stops)"}
            value={text}
            onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                e.preventDefault();
                send();
              }
            }}
          />
          {streaming ? (
            <button type="button" class="btn-primary" onClick={() => turn.current?.cancel()}>
              Stop
            </button>
          ) : (
            <button type="submit" class="btn-primary" disabled={!text.trim()}>
              {editing ? "Resend" : "Send"}
            </button>
          )}
        </form>
      </section>
    </div>
  );
}
