// The API client: every call sends the key the person typed (kept in localStorage), and every
// failure becomes an ApiError with the server's message, its status and, for 429, the wait.

const KEY_STORE = "wick.apiKey";

export function getKey(): string {
  try {
    return localStorage.getItem(KEY_STORE) ?? "";
  } catch {
    return "";
  }
}

export function setKey(key: string): void {
  try {
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
  } catch {
    /* private mode: the key lives for this page only */
  }
}

export class ApiError extends Error {
  status: number;
  /** Seconds to wait, from Retry-After (429, 503). */
  retryAfter: number | null;
  code: string | null;
  constructor(status: number, message: string, retryAfter: number | null, code: string | null) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date). */
export function parseRetryAfter(v: string | null, now = Date.now()): number | null {
  if (!v) return null;
  const n = Number(v.trim());
  if (Number.isFinite(n) && n >= 0) return Math.ceil(n);
  const t = Date.parse(v);
  return Number.isNaN(t) ? null : Math.max(0, Math.ceil((t - now) / 1000));
}

export function authHeaders(): Record<string, string> {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An ApiError from a failed response (the OpenAI envelope when there is one). */
export async function errorOf(r: Response): Promise<ApiError> {
  let message = `${r.status} ${r.statusText}`;
  let code: string | null = null;
  try {
    const body = await r.json();
    if (body?.error?.message) message = body.error.message;
    code = body?.error?.code ?? null;
  } catch {
    /* not JSON */
  }
  return new ApiError(r.status, message, parseRetryAfter(r.headers.get("retry-after")), code);
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = { ...authHeaders() };
  if (init.body) headers["Content-Type"] = "application/json";
  let r: Response;
  try {
    r = await fetch(path, { ...init, headers: { ...headers, ...(init.headers as Record<string, string>) } });
  } catch (e) {
    throw new ApiError(0, `the server cannot be reached (${(e as Error).message})`, null, "network");
  }
  if (!r.ok) throw await errorOf(r);
  const text = await r.text();
  return (text ? JSON.parse(text) : null) as T;
}

export interface Conversation {
  id: string;
  created_at: number;
  metadata: Record<string, string>;
}

export interface ListPage<T> {
  data: T[];
  has_more: boolean;
  last_id: string | null;
}

export interface Item {
  id: string;
  type: string;
  role?: string;
  content?: { type: string; text?: string }[];
}

export const conversations = {
  list: (search = "", after = "") => {
    const q = new URLSearchParams({ limit: "50" });
    if (search) q.set("search", search);
    if (after) q.set("after", after);
    return api<ListPage<Conversation>>(`/v1/conversations?${q}`);
  },
  create: (title: string) =>
    api<Conversation>("/v1/conversations", { method: "POST", body: JSON.stringify({ metadata: { title } }) }),
  rename: (id: string, metadata: Record<string, string>) =>
    api<Conversation>(`/v1/conversations/${id}`, { method: "POST", body: JSON.stringify({ metadata }) }),
  remove: (id: string) => api<unknown>(`/v1/conversations/${id}`, { method: "DELETE" }),
  items: async (id: string): Promise<Item[]> => {
    const all: Item[] = [];
    let after = "";
    for (;;) {
      const q = new URLSearchParams({ order: "asc", limit: "100" });
      if (after) q.set("after", after);
      const page = await api<ListPage<Item>>(`/v1/conversations/${id}/items?${q}`);
      all.push(...page.data);
      if (!page.has_more || !page.last_id) return all;
      after = page.last_id;
    }
  },
  deleteItem: (id: string, item: string) =>
    api<unknown>(`/v1/conversations/${id}/items/${item}`, { method: "DELETE" }),
};

export const models = () => api<{ data: { id: string }[] }>("/v1/models");
