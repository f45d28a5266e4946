// The conversations list: search, new, rename, delete. The list is the server's
// (GET /v1/conversations), so it follows the key to another browser.

import { useState } from "preact/hooks";
import type { Conversation } from "./api";
import { titleOf } from "./state";

interface Props {
  convs: Conversation[];
  current: string | null;
  search: string;
  onSearch: (s: string) => void;
  onOpen: (id: string) => void;
  onNew: () => void;
  onRename: (id: string, title: string) => void;
  onDelete: (id: string) => void;
  /** Closes the list where it covers the chat (a phone's screen). */
  onClose: () => void;
}

export function Sidebar(p: Props) {
  const [editing, setEditing] = useState<string | null>(null);
  const [draft, setDraft] = useState("");
  return (
    <nav aria-label="Conversations" class="flex h-full flex-col gap-2 p-2">
      <div class="flex gap-2">
        <button type="button" class="btn-primary flex-1" onClick={p.onNew}>
          New chat
        </button>
        <button type="button" class="btn sm:hidden" onClick={p.onClose}>
          Close
        </button>
      </div>
      <label for="conv-search" class="sr-only">
        Search conversations
      </label>
      <input
        id="conv-search"
        type="search"
        placeholder="Search conversations"
        class="field"
        value={p.search}
        onInput={(e) => p.onSearch((e.target as HTMLInputElement).value)}
      />
      <ul class="min-h-0 flex-1 overflow-y-auto" data-testid="conversations">
        {p.convs.map((c) => (
          <li key={c.id} class="group flex items-center gap-1 rounded hover:bg-slate-100 dark:hover:bg-slate-800">
            {editing === c.id ? (
              <form
                class="flex flex-1 gap-1 p-1"
                onSubmit={(e) => {
                  e.preventDefault();
                  setEditing(null);
                  p.onRename(c.id, draft.trim() || titleOf(c.metadata));
                }}
              >
                <label for={`rename-${c.id}`} class="sr-only">
                  New title
                </label>
                <input
                  id={`rename-${c.id}`}
                  class="field min-w-0 flex-1"
                  value={draft}
                  onInput={(e) => setDraft((e.target as HTMLInputElement).value)}
                  onKeyDown={(e) => e.key === "Escape" && setEditing(null)}
                />
                <button type="submit" class="btn">
                  Save
                </button>
              </form>
            ) : (
              <>
                <button
                  type="button"
                  class={`min-w-0 flex-1 truncate px-2 py-1 text-left text-sm ${c.id === p.current ? "font-semibold" : ""}`}
                  aria-current={c.id === p.current ? "true" : undefined}
                  onClick={() => p.onOpen(c.id)}
                >
                  {titleOf(c.metadata)}
                </button>
                <button
                  type="button"
                  class="px-1 text-xs underline"
                  aria-label={`Rename ${titleOf(c.metadata)}`}
                  onClick={() => {
                    setDraft(titleOf(c.metadata));
                    setEditing(c.id);
                  }}
                >
                  Rename
                </button>
                <button
                  type="button"
                  class="px-1 text-xs text-red-700 underline dark:text-red-300"
                  aria-label={`Delete ${titleOf(c.metadata)}`}
                  onClick={() => confirm(`Delete "${titleOf(c.metadata)}"?`) && p.onDelete(c.id)}
                >
                  Delete
                </button>
              </>
            )}
          </li>
        ))}
        {p.convs.length === 0 && <li class="p-2 text-sm text-slate-600 dark:text-slate-300">No conversations yet.</li>}
      </ul>
    </nav>
  );
}
