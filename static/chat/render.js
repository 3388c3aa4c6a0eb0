// Model text to safe DOM: Markdown (marked, with $…$ / $$…$$ as KaTeX math) → sanitised HTML
// (DOMPurify) → code blocks with highlighting and a Copy button. Nothing the model writes
// reaches the page unsanitised.

import { textWithoutMarkers } from "./citations.js";

// Guessing a language runs every grammar; only worth it once, on the final render of a block
// that is not huge.
const AUTO_DETECT_MAX_CHARS = 20_000;
const SAFE_LINK_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const COPY_FEEDBACK_MS = 1500;

const PURIFY_CONFIG = {
  USE_PROFILES: { html: true, mathMl: true },
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

/** A module imported once, the first time it is asked for; a failed import is tried again the
 * next time. `load` imports it and keeps what it needs. */
function lazily(load) {
  let loading = null;
  return () => {
    if (!loading) {
      loading = load().catch((error) => {
        loading = null;
        throw error;
      });
    }
    return loading;
  };
}

// Runs inside DOMPurify after its own attribute checks: links open in a new tab without access
// to this page, and an href with any other scheme is dropped, leaving the link text.
function checkLink(node) {
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
}

// marked and DOMPurify are imported when the page first renders Markdown itself: a page whose
// messages the server drew needs neither until a reply streams or the reader starts writing
// (chat.js), and evaluating them cost ~80 ms of a phone's main thread on every page load.
let DOMPurify = null;
let streamingMarked = null;
let finalMarked = null;

/** Imports marked and DOMPurify (once); resolves when Markdown can be rendered. */
export const loadRenderer = lazily(() =>
  Promise.all([
    import("../vendor/marked/marked.esm.js"),
    import("../vendor/dompurify/purify.es.mjs"),
  ]).then(([markedModule, purifyModule]) => {
    DOMPurify = purifyModule.default;
    DOMPurify.addHook("afterSanitizeAttributes", checkLink);
    streamingMarked = makeMarked(markedModule.Marked, { autoDetect: false });
    finalMarked = makeMarked(markedModule.Marked, { autoDetect: true });
  }),
);

/** True once Markdown can be rendered (marked and DOMPurify have arrived). */
export function rendererReady() {
  return finalMarked !== null;
}

function languageName(lang) {
  return (lang || "").trim().split(/\s+/)[0].toLowerCase().replace(/[^\w+#.-]/g, "");
}

// highlight.js (registering its ~37 languages costs ~90 ms of a phone's main thread) is fetched
// with the first code block the page colours itself, not with the page: code the server drew is
// coloured already. Code rendered before it arrives is shown plain and coloured once it has.
let hljs = null;
const loadHighlighter = lazily(() =>
  import("../vendor/highlight/highlight.min.js").then((module) => {
    hljs = module.default;
  }),
);

function highlight(code, lang, autoDetect) {
  if (!hljs) return { html: escapeHtml(code), lang, plain: true };
  if (lang && hljs.getLanguage(lang)) {
    return { html: hljs.highlight(code, { language: lang, ignoreIllegals: true }).value, lang };
  }
  if (!lang && autoDetect && code.length <= AUTO_DETECT_MAX_CHARS) {
    const guess = hljs.highlightAuto(code);
    if (guess.language && guess.relevance >= 5) return { html: guess.value, lang: guess.language };
  }
  return { html: escapeHtml(code), lang };
}

// KaTeX writes MathML only: its HTML output positions glyphs with inline style attributes,
// which the page's Content-Security-Policy (style-src 'self') refuses; browsers lay out MathML.
const KATEX_OPTIONS = {
  output: "mathml", throwOnError: false, trust: false, strict: "ignore", maxSize: 50, maxExpand: 1000,
};

// KaTeX (600 KB, most of the page's script) and its stylesheet are fetched the first time a
// formula is met, not with the page: most conversations have none.
let katex = null;
const loadKatex = lazily(() =>
  import("../vendor/katex/katex.mjs").then((module) => {
    katex = module.default;
  }),
);

// What the math syntax below would take for a formula, code spans and blocks included: a hint
// that KaTeX will be needed, never a reason to skip rendering.
const MATH_HINT = /\$\$[\s\S]+?\$\$|\$(?!\s)(?:\\\$|[^$\n])+?(?<![\s\\])\$(?!\d)/;

/** Text that may hold a formula: KaTeX will be needed to render it. */
export function mayHaveMath(text) {
  return typeof text === "string" && MATH_HINT.test(text);
}

/** True once KaTeX is loaded: formulas render as MathML rather than as their source. */
export function mathReady() {
  return katex !== null;
}

/** Loads KaTeX and its stylesheet (once); resolves when formulas can be rendered. */
export function loadMath() {
  const href = document.querySelector('meta[name="math-stylesheet"]')?.content;
  if (href && !document.querySelector("link[data-math-stylesheet]")) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = href;
    link.dataset.mathStylesheet = "";
    document.head.append(link);
  }
  return loadKatex();
}

/** Resolves when what a render lacked has arrived (marked and DOMPurify, then KaTeX): render
 * again then (renderInto returned false). */
export function renderingReady() {
  return rendererReady() ? loadMath() : loadRenderer();
}

// Set when a render met a formula before KaTeX was loaded (it shows the formula's source).
let mathMissed = false;

/** TeX as MathML markup; a formula KaTeX cannot parse is shown as its source, and so is one
 * met before KaTeX is loaded (`source`, with its dollars: the caller renders it again then). */
export function renderTex(tex, displayMode, source = tex) {
  if (!katex) {
    mathMissed = true;
    loadMath().catch(() => {});
    return `<span class="math-pending">${escapeHtml(source)}</span>`;
  }
  try {
    // The TeX source annotation is for MathML-aware tools; sanitised, it would show as text.
    return katex
      .renderToString(tex, { ...KATEX_OPTIONS, displayMode })
      .replace(/<annotation\b[\s\S]*?<\/annotation>/g, "");
  } catch {
    return `<code class="math-error">${escapeHtml(tex)}</code>`;
  }
}

// Inline `$x$` needs no space inside its dollars and no digit after ("costs $5 and $10" stays
// text); `$$…$$` is display math. Code spans and blocks are tokenized first, so math is never
// looked for inside code.
const INLINE_MATH = /^\$(?!\s)((?:\\\$|[^$\n])+?)(?<![\s\\])\$(?!\d)/;
const INLINE_DISPLAY_MATH = /^\$\$(?!\$)([\s\S]+?)\$\$/;
const BLOCK_MATH = /^ {0,3}\$\$([\s\S]+?)\$\$[ \t]*(?:\n+|$)/;

const mathExtension = {
  extensions: [
    {
      name: "blockMath",
      level: "block",
      tokenizer(src) {
        const match = BLOCK_MATH.exec(src);
        if (match) return { type: "blockMath", raw: match[0], text: match[1].trim() };
        return undefined;
      },
      renderer: (token) => `<div class="math-display">${renderTex(token.text, true, token.raw.trim())}</div>\n`,
    },
    {
      name: "inlineMath",
      level: "inline",
      start(src) {
        const index = src.indexOf("$");
        return index < 0 ? undefined : index;
      },
      tokenizer(src) {
        let match = INLINE_DISPLAY_MATH.exec(src);
        if (match) return { type: "inlineMath", raw: match[0], text: match[1].trim(), display: true };
        match = INLINE_MATH.exec(src);
        if (match) return { type: "inlineMath", raw: match[0], text: match[1], display: false };
        return undefined;
      },
      renderer: (token) => renderTex(token.text, token.display, token.raw),
    },
  ],
};

function makeMarked(Marked, { autoDetect }) {
  const marked = new Marked({
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
        const coloured = out.plain ? "" : ' data-coloured="true"';
        return `<pre data-lang="${escapeHtml(out.lang)}"><code class="hljs${cls}"${coloured}>${out.html}</code></pre>\n`;
      },
    },
  });
  marked.use(mathExtension);
  return marked;
}

/** Markdown as a sanitised DocumentFragment (once loadRenderer has resolved). `final` adds
 * language guessing for unlabelled code. */
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

// Code left plain (drawn by the server in a language it does not colour, or rendered before
// highlight.js arrived) is coloured afterwards: colouring costs 1–50 ms a block on a phone, so
// a few blocks a task, nearest the end first (what shows).
const COLOUR_TASK_MS = 8;
const colourQueue = [];
let colourTimer = null;

function scheduleColouring() {
  if (colourTimer !== null || !colourQueue.length) return;
  if (!hljs || !rendererReady()) {
    colourTimer = -1; // waiting for highlight.js (and DOMPurify)
    Promise.all([loadHighlighter(), loadRenderer()]).then(
      () => {
        colourTimer = null;
        scheduleColouring();
      },
      () => {
        colourTimer = null; // no colours this time: the code stays plain
      },
    );
    return;
  }
  colourTimer = setTimeout(colourNext, 0);
}

function colourNext() {
  colourTimer = null;
  const until = performance.now() + COLOUR_TASK_MS;
  while (colourQueue.length && performance.now() < until) {
    const code = colourQueue.pop();
    const pre = code.parentElement;
    if (!code.isConnected || !pre || code.dataset.coloured) continue;
    const out = highlight(code.textContent, pre.dataset.lang || "", true);
    code.replaceChildren(DOMPurify.sanitize(out.html, PURIFY_CONFIG));
    code.dataset.coloured = "true";
    if (out.lang && out.lang !== pre.dataset.lang) {
      pre.dataset.lang = out.lang;
      code.classList.add(`language-${out.lang}`);
      const label = pre.parentElement?.querySelector(":scope > .code-bar > .code-lang");
      if (label) label.textContent = out.lang;
    }
  }
  scheduleColouring();
}

/** Colours the code blocks under `root` left plain (as renderInto's would be), in later, short
 * tasks. */
export function colourCodeBlocks(root) {
  colourQueue.push(...root.querySelectorAll("pre > code.hljs:not([data-coloured])"));
  scheduleColouring();
}

/** Replaces the children of `target` with `text` rendered as Markdown. Returns false when the
 * render lacked something: marked and DOMPurify (the text is shown as written, as text), or
 * KaTeX (a formula is shown as its source). Render again once renderingReady() resolves. */
export function renderInto(target, text, { final = true } = {}) {
  if (!rendererReady()) {
    target.textContent = text;
    loadRenderer().catch(() => {});
    return false;
  }
  mathMissed = false;
  target.replaceChildren(renderMarkdown(text, { final }));
  decorateCodeBlocks(target);
  if (!hljs) colourCodeBlocks(target);
  return !mathMissed;
}

// A tail longer than this is cut at its last line break even inside a paragraph or a code
// block, so no single re-render grows with the reply.
const STREAM_TAIL_MAX_CHARS = 3000;

/** The backticks or tildes that open a fenced code block line. */
function fenceMarker(line) {
  return /^ {0,3}(`{3,}|~{3,})/.exec(line)?.[1] || "```";
}

/**
 * Markdown of a reply that is still being written, rendered incrementally: text up to the last
 * blank line outside code fences and display math is rendered once into a frozen chunk and
 * never again; only the tail after it is re-rendered on each update. A tail longer than
 * STREAM_TAIL_MAX_CHARS is cut at a line break (a code block is closed there and reopened in
 * the next chunk). The cost of a whole reply is then linear in its length. The final render
 * (renderInto with final: true) renders the complete text once, in one piece.
 */
export class StreamingMarkdown {
  constructor(target, { onFrozen } = {}) {
    this.target = target;
    this.onFrozen = onFrozen;
    this.reset();
  }

  reset() {
    this.frozenLength = 0;
    this.frozenFence = ""; // the fence line open where the frozen text ends ("" for none)
    this.scanFrom = 0;
    this.boundary = 0;
    this.soft = 0;
    this.softFence = "";
    this.fence = "";
    this.fenceLine = "";
    this.inMath = false;
    this.source = "";
    this.tail = document.createElement("div");
    this.tail.className = "md-chunk md-tail";
    this.target.replaceChildren(this.tail);
  }

  /** Renders `text`, which extends the text of the previous call (else everything restarts). */
  update(text) {
    if (!rendererReady()) {
      // Nothing is frozen before marked and DOMPurify arrive: the text shows as written, and is
      // rendered as soon as they have (or by the next update).
      this.reset();
      this.source = text;
      this.tail.textContent = text;
      loadRenderer().then(
        () => {
          if (this.source === text && this.tail.isConnected) {
            this.source = "";
            this.update(text);
          }
        },
        () => {},
      );
      return;
    }
    if (!this.extends(text)) this.reset();
    this.source = text;
    this.scan(text);
    if (this.boundary > this.frozenLength) {
      this.freeze(text, this.boundary, "");
    } else if (text.length - this.frozenLength > STREAM_TAIL_MAX_CHARS && this.soft > this.frozenLength) {
      this.freeze(text, this.soft, this.softFence);
    }
    renderInto(this.tail, this.reopened(text.slice(this.frozenLength)), { final: false });
  }

  reopened(markdown) {
    return this.frozenFence ? `${this.frozenFence}\n${markdown}` : markdown;
  }

  freeze(text, end, fenceAtEnd) {
    const chunk = document.createElement("div");
    chunk.className = "md-chunk";
    let markdown = this.reopened(text.slice(this.frozenLength, end));
    if (fenceAtEnd) markdown += `\n${fenceMarker(fenceAtEnd)}\n`; // close it; the tail reopens it
    if (end !== this.boundary) chunk.dataset.soft = "true";
    renderInto(chunk, markdown, { final: false });
    this.target.insertBefore(chunk, this.tail);
    this.frozenLength = end;
    this.frozenFence = fenceAtEnd;
    this.onFrozen?.(chunk);
  }

  extends(text) {
    const old = this.source;
    if (text.length < old.length) return false;
    // A cheap check: the same length of text ends with the same characters.
    const probe = Math.min(old.length, 64);
    return text.slice(old.length - probe, old.length) === old.slice(old.length - probe);
  }

  /** Advances over complete lines, remembering the last places to cut. */
  scan(text) {
    let pos = this.scanFrom;
    for (;;) {
      const end = text.indexOf("\n", pos);
      if (end < 0) break;
      const line = text.slice(pos, end);
      const fence = /^ {0,3}(`{3,}|~{3,})/.exec(line);
      if (fence) {
        if (!this.fence) {
          this.fence = fence[1];
          this.fenceLine = line.trim();
        } else if (fence[1][0] === this.fence[0] && fence[1].length >= this.fence.length) {
          this.fence = "";
          this.fenceLine = "";
        }
      } else if (!this.fence) {
        const dollars = line.split("$$").length - 1;
        if (dollars % 2 === 1) this.inMath = !this.inMath;
        if (!this.inMath && line.trim() === "") this.boundary = end + 1;
      }
      if (!this.inMath) {
        this.soft = end + 1;
        this.softFence = this.fence ? this.fenceLine : "";
      }
      pos = end + 1;
    }
    this.scanFrom = pos;
  }
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
    // Citation markers are the page's, not the code's.
    if (await copyText(textWithoutMarkers(code))) {
      flashLabel(button, "Copied");
    } else {
      // Leave the code selected so the keyboard shortcut still works.
      window.getSelection()?.selectAllChildren(code);
      flashLabel(button, "Press Ctrl+C");
    }
  });
}
