// Model text to safe DOM: Markdown (marked) → sanitised HTML (DOMPurify) → code blocks with
// highlighting and a Copy button. Nothing the model writes reaches the page unsanitised.

import { Marked } from "../vendor/marked/marked.esm.js";
import DOMPurify from "../vendor/dompurify/purify.es.mjs";
import hljs from "../vendor/highlight/highlight.min.js";

// Guessing a language runs every grammar; only worth it once, on the final render of a block
// that is not huge.
const AUTO_DETECT_MAX_CHARS = 20_000;
const SAFE_LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const COPY_FEEDBACK_MS = 1500;

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["style", "form", "button", "textarea", "select", "option", "img", "video", "audio",
    "source", "picture", "iframe", "object", "embed"],
  FORBID_ATTR: ["style", "id", "name", "srcset", "action", "formaction"],
  RETURN_DOM_FRAGMENT: true,
};

const HTML_ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]);
}

/** An absolute http(s)/mailto URL, normalised, or null for anything else (relative, javascript:, data:…). */
export function safeUrl(href) {
  if (typeof href !== "string" || !href.trim()) return null;
  let url;
  try {
    url = new URL(href.trim());
  } catch {
    return null;
  }
  return SAFE_LINK_PROTOCOLS.has(url.protocol) ? url.href : null;
}

// Runs inside DOMPurify after its own attribute checks: links open in a new tab without access
// to this page, and an href with any other scheme is dropped, leaving the link text.
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (!node.hasAttribute || !node.hasAttribute("href")) return;
  const href = node.nodeName === "A" ? safeUrl(node.getAttribute("href")) : null;
  if (!href) {
    node.removeAttribute("href");
    node.removeAttribute("target");
    return;
  }
  node.setAttribute("href", href);
  node.setAttribute("rel", "noopener noreferrer");
  node.setAttribute("target", "_blank");
});

function languageName(lang) {
  return (lang || "").trim().split(/\s+/)[0].toLowerCase().replace(/[^\w+#.-]/g, "");
}

function highlight(code, lang, autoDetect) {
  if (lang && hljs.getLanguage(lang)) {
    return { html: hljs.highlight(code, { language: lang, ignoreIllegals: true }).value, lang };
  }
  if (!lang && autoDetect && code.length <= AUTO_DETECT_MAX_CHARS) {
    const guess = hljs.highlightAuto(code);
    if (guess.language && guess.relevance >= 5) return { html: guess.value, lang: guess.language };
  }
  return { html: escapeHtml(code), lang };
}

function makeMarked({ autoDetect }) {
  return new Marked({
    gfm: true,
    breaks: false,
    renderer: {
      // HTML the model writes is shown as text, the way it was typed.
      html({ text, block }) {
        return block ? `<p>${escapeHtml(text)}</p>\n` : escapeHtml(text);
      },
      // Images would load from anywhere the model names; show them as links instead.
      image({ href, text }) {
        return `<a href="${escapeHtml(href || "")}">${escapeHtml(text || href || "image")}</a>`;
      },
      code({ text, lang }) {
        const out = highlight(text, languageName(lang), autoDetect);
        const cls = out.lang ? ` language-${escapeHtml(out.lang)}` : "";
        return `<pre data-lang="${escapeHtml(out.lang)}"><code class="hljs${cls}">${out.html}</code></pre>\n`;
      },
    },
  });
}

const streamingMarked = makeMarked({ autoDetect: false });
const finalMarked = makeMarked({ autoDetect: true });

/** Markdown as a sanitised DocumentFragment. `final` adds language guessing for unlabelled code. */
export function renderMarkdown(text, { final = true } = {}) {
  const html = (final ? finalMarked : streamingMarked).parse(text || "");
  return DOMPurify.sanitize(html, PURIFY_CONFIG);
}

/** Wraps each <pre> under `root` in a block with its language and a Copy button. */
export function decorateCodeBlocks(root) {
  for (const pre of root.querySelectorAll("pre")) {
    if (pre.parentElement?.classList.contains("code-block")) continue;
    const block = document.createElement("div");
    block.className = "code-block";
    const bar = document.createElement("div");
    bar.className = "code-bar";
    const label = document.createElement("span");
    label.className = "code-lang";
    label.textContent = pre.dataset.lang || "text";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.dataset.testid = "copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    bar.append(label, copy);
    pre.replaceWith(block);
    block.append(bar, pre);
  }
}

/** Replaces the children of `target` with `text` rendered as Markdown. */
export function renderInto(target, text, { final = true } = {}) {
  target.replaceChildren(renderMarkdown(text, { final }));
  decorateCodeBlocks(target);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false; // no clipboard API (plain-http origin) or permission refused
  }
}

function flashLabel(button, label) {
  button.textContent = label;
  clearTimeout(button._resetTimer);
  button._resetTimer = setTimeout(() => {
    button.textContent = "Copy";
  }, COPY_FEEDBACK_MS);
}

/** One click handler for every Copy button under `root`, present and future. */
export function installCopyHandler(root) {
  root.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy-code");
    if (!button || !root.contains(button)) return;
    const code = button.closest(".code-block")?.querySelector("pre code");
    if (!code) return;
    if (await copyText(code.textContent)) {
      flashLabel(button, "Copied");
    } else {
      // Leave the code selected so the keyboard shortcut still works.
      window.getSelection()?.selectAllChildren(code);
      flashLabel(button, "Press Ctrl+C");
    }
  });
}
