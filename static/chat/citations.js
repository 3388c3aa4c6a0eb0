// Citations of a reply (docs/documents.md, docs/claude.md "Web search"): numbered markers after
// each cited text block, a Sources list under the reply, and the cited text on a marker's click.
//
// The reply's Markdown is rendered in one piece, so a block's end is marked in the Markdown
// source with two private-use characters (absent from the text), found again in the sanitised
// DOM's text nodes and replaced there by marker buttons. Everything the model or a search result
// wrote (titles, quoted text, URLs) is set as text, never as HTML.

const SENTINEL_FIRST = 0xe000;
const INDEX_FIRST = 0xf000;
const FENCE_OR_MATH_END = /^ {0,3}(`{3,}|~{3,})\s*$|\$\$\s*$/;
// Blocks between two text blocks that start a new round of the reply (a tool step, thinking):
// the text after them is a new paragraph, as the server's streamed text has it.
const ROUND_BREAK = "\n\n";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** An absolute http(s) URL, else null: only these become links. */
export function httpUrl(raw) {
  if (typeof raw !== "string") return null;
  try {
    const url = new URL(raw.trim());
    return url.protocol === "http:" || url.protocol === "https:" ? url : null;
  } catch {
    return null;
  }
}

function int(value) {
  return Number.isInteger(value) ? value : null;
}

/** "p. 3" or "pp. 3–5" from a page_location (its end page is exclusive). */
export function pageLabel(start, end) {
  if (start === null) return "";
  const last = end !== null && end - 1 > start ? end - 1 : start;
  return last === start ? `p. ${start}` : `pp. ${start}–${last}`;
}

/** Where in a document a citation points, as a reader says it; "" when unknown. */
function locationLabel(c) {
  if (c.type === "page_location") return pageLabel(int(c.start_page_number), int(c.end_page_number));
  if (c.type === "char_location") {
    const start = int(c.start_char_index);
    const end = int(c.end_char_index);
    return start === null || end === null ? "" : `chars ${start}–${end}`;
  }
  if (c.type === "content_block_location") {
    const start = int(c.start_block_index);
    const end = int(c.end_block_index);
    if (start === null) return "";
    return end === null || end - 1 <= start ? `block ${start}` : `blocks ${start}–${end - 1}`;
  }
  return "";
}

const DOCUMENT_TYPES = new Set(["page_location", "char_location", "content_block_location"]);

/** The source a citation points at: {key, kind, title, url, location}, or null. */
function sourceOf(c, results) {
  if (!c || typeof c !== "object") return null;
  if (c.type === "web_search_result_location") {
    const url = typeof c.url === "string" ? c.url : "";
    if (!url) return null;
    const found = results.get(url);
    const title = (typeof c.title === "string" && c.title) || (typeof found?.title === "string" && found.title) || url;
    const pageAge = typeof found?.page_age === "string" ? found.page_age : "";
    return { key: `web ${url}`, kind: "web", title, url, pageAge, location: "" };
  }
  if (DOCUMENT_TYPES.has(c.type)) {
    const index = int(c.document_index);
    const title = typeof c.document_title === "string" && c.document_title
      ? c.document_title
      : `Document ${index === null ? "" : index + 1}`.trim();
    const location = locationLabel(c);
    return { key: `doc ${index} ${c.type} ${location}`, kind: "document", title, url: "", pageAge: "", location };
  }
  return null;
}

/** Search results by URL, for their titles and page ages. */
function searchResults(content) {
  const results = new Map();
  for (const block of content) {
    if (block?.type !== "web_search_tool_result" || !Array.isArray(block.content)) continue;
    for (const item of block.content) {
      if (item?.type === "web_search_result" && typeof item.url === "string") results.set(item.url, item);
    }
  }
  return results;
}

function absentChar(text, from, span) {
  let code = from;
  const clear = (c) => {
    for (let k = 0; k < span; k++) if (text.includes(String.fromCharCode(c + k))) return false;
    return true;
  };
  while (!clear(code)) code += span;
  return code;
}

/** `text` with the token after its last visible character (trailing white space kept after). */
function withToken(text, token) {
  const body = text.replace(/\s+$/, "");
  const trail = text.slice(body.length);
  if (!body) return token + trail;
  const lastLine = body.slice(body.lastIndexOf("\n") + 1);
  // After a closing fence or display math the token goes on a line of its own: on the same line
  // it would stop them closing.
  if (FENCE_OR_MATH_END.test(lastLine)) return `${body}\n\n${token}${trail}`;
  // A space before it: emphasis closes before it, an autolink ends before it.
  return `${body} ${token}${trail}`;
}

/**
 * The citations of a reply's blocks, or null when none cites anything:
 * {markdown, sentinel, indexFirst, blocks: [{numbers, citations: [{number, citation}]}],
 *  sources: [{number, kind, title, url, pageAge, location}]}.
 * `markdown` is the text blocks joined as the API means them (directly; a new paragraph after a
 * tool step), with a token after each cited block; `offsets[i]` is where block i's part of it
 * begins (`offsets[content.length]`: its end), so a run of blocks can be rendered apart.
 */
export function citationsOf(content) {
  if (!Array.isArray(content)) return null;
  const cites = (b) => b?.type === "text" && Array.isArray(b.citations) && b.citations.length > 0;
  if (!content.some(cites)) return null;
  const allText = content.map((b) => (b?.type === "text" && typeof b.text === "string" ? b.text : "")).join("");
  const blocks = content.filter(cites);
  const sentinel = String.fromCharCode(absentChar(allText, SENTINEL_FIRST, 1));
  const indexFirst = absentChar(allText + sentinel, INDEX_FIRST, Math.max(1, blocks.length));
  const results = searchResults(content);
  const byKey = new Map();
  const sources = [];
  const cited = [];
  let markdown = "";
  let breakBefore = false;
  const offsets = [];
  for (const block of content) {
    offsets.push(markdown.length);
    if (!block || typeof block !== "object") continue;
    if (block.type === "continuation") {
      breakBefore = false;
      continue;
    }
    if (block.type !== "text") {
      breakBefore = true;
      continue;
    }
    const text = typeof block.text === "string" ? block.text : "";
    if (breakBefore && markdown && text) markdown += ROUND_BREAK;
    if (text) breakBefore = false;
    if (!cites(block)) {
      markdown += text;
      continue;
    }
    const entry = { numbers: [], citations: [] };
    for (const citation of block.citations) {
      const found = sourceOf(citation, results);
      if (!found) continue;
      let source = byKey.get(found.key);
      if (!source) {
        source = { ...found, number: sources.length + 1 };
        byKey.set(found.key, source);
        sources.push(source);
      }
      if (!entry.numbers.includes(source.number)) entry.numbers.push(source.number);
      entry.citations.push({ number: source.number, citation });
    }
    if (!entry.numbers.length) {
      markdown += text;
      continue;
    }
    markdown += withToken(text, sentinel + String.fromCharCode(indexFirst + cited.length));
    cited.push(entry);
  }
  if (!sources.length) return null;
  offsets.push(markdown.length);
  return { markdown, offsets, sentinel, indexFirst, blocks: cited, sources };
}

/** Replaces the tokens in `root`'s text by `makeMarkers(blockIndex)` (an array of nodes); a
 * block whose token did not survive as text gets its markers at the end of the body. Text
 * inside `skip` elements (a CSS selector: tool steps among the text) is left alone. */
export function placeMarkers(root, cited, makeMarkers, { skip = "" } = {}) {
  const first = String.fromCharCode(cited.indexFirst);
  const last = String.fromCharCode(cited.indexFirst + Math.max(0, cited.blocks.length - 1));
  const token = new RegExp(` ?${cited.sentinel}([${first}-${last}])`, "g");
  const strayChars = `[${cited.sentinel}${first}-${last}]`;
  const stray = new RegExp(strayChars, "g");
  const hasStray = new RegExp(strayChars);
  const placed = new Set();
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => (skip && node.parentElement?.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) if (hasStray.test(walker.currentNode.data)) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const parts = [];
    let at = 0;
    for (const match of node.data.matchAll(token)) {
      const index = match[1].charCodeAt(0) - cited.indexFirst;
      parts.push(node.data.slice(at, match.index).replace(stray, ""));
      if (!placed.has(index)) parts.push(...makeMarkers(index));
      placed.add(index);
      at = match.index + match[0].length;
    }
    parts.push(node.data.slice(at).replace(stray, ""));
    node.replaceWith(...parts.filter((p) => p !== ""));
  }
  const missing = cited.blocks.map((_, index) => index).filter((index) => !placed.has(index));
  if (missing.length) {
    const tail = el("p", "cite-tail");
    for (const index of missing) tail.append(...makeMarkers(index));
    root.append(tail);
  }
}

/** The text of `node` without citation markers (for copying). */
export function textWithoutMarkers(node) {
  const copy = node.cloneNode(true);
  for (const marker of copy.querySelectorAll(".cite-marker")) marker.remove();
  return copy.textContent;
}

/** A source's title: a link (new tab, no opener, no referrer) for an http(s) URL, else text. */
export function sourceTitle(source) {
  const url = source.kind === "web" ? httpUrl(source.url) : null;
  if (!url) return el("span", "source-title", source.title);
  const link = el("a", "source-title source-link", source.title);
  link.href = url.href;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  link.dataset.testid = "source-link";
  return link;
}

/** The details after a source's title: host and page age (web), or where in the document. */
export function sourceDetails(source) {
  const parts = [];
  if (source.kind === "web") {
    const url = httpUrl(source.url);
    // Not a link: shown as text, so a reader sees what it is.
    parts.push(el("span", "source-host", url ? url.host : source.url));
    if (source.pageAge) parts.push(el("span", "source-age", source.pageAge));
  } else if (source.location) {
    parts.push(el("span", "source-where", source.location));
  }
  for (const part of parts) part.dataset.testid = part.className;
  return parts;
}
