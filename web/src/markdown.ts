// Markdown to safe HTML: marked parses, highlight.js (core and a few languages) colours code,
// DOMPurify cleans the result before it reaches innerHTML.

import { Marked } from "marked";
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import typescript from "highlight.js/lib/languages/typescript";

for (const [name, lang] of Object.entries({ bash, javascript, json, python, rust, typescript })) {
  hljs.registerLanguage(name, lang);
}
hljs.registerAliases(["sh", "shell"], { languageName: "bash" });
hljs.registerAliases(["js"], { languageName: "javascript" });
hljs.registerAliases(["ts"], { languageName: "typescript" });
hljs.registerAliases(["py"], { languageName: "python" });
hljs.registerAliases(["rs"], { languageName: "rust" });

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    code({ text, lang }) {
      const name = (lang ?? "").trim().split(/\s+/)[0];
      const html = name && hljs.getLanguage(name) ? hljs.highlight(text, { language: name }).value : escapeHtml(text);
      const label = escapeHtml(name || "code");
      return `<div class="codeblock"><div class="codebar"><span>${label}</span><button type="button" class="copy" data-copy aria-label="Copy code">Copy</button></div><pre><code class="hljs">${html}</code></pre></div>`;
    },
  },
});

export function renderMarkdown(src: string): string {
  const html = marked.parse(src, { async: false }) as string;
  return DOMPurify.sanitize(html, { FORBID_ATTR: ["style"], FORBID_TAGS: ["style", "form", "input"] });
}
