// The message list: one entry per saved message id, its DOM, and throttled Markdown renders.
// User text is inserted as text; assistant text only through render.js (sanitised).

import { colourCodeBlocks, renderInto, renderingReady, rendererReady, StreamingMarkdown } from "./render.js";
import { citationsOf, placeMarkers, sourceDetails, sourceTitle, textWithoutMarkers } from "./citations.js";
import { blocksText, flowOf, splitsOf, streamedFlow } from "./steps.js";

const RENDER_INTERVAL_MS = 100; // at most ~10 Markdown renders a second while streaming
const PIN_THRESHOLD_PX = 48;

// Error codes for which the same request may succeed later (docs/protocol.md, "Error codes").
const RETRYABLE_CODES = new Set([
  "busy", "upstream_rate_limited", "upstream_overloaded", "upstream_error", "upstream_timeout",
  "upstream_disconnected", "internal_error",
]);

const STOP_NOTES = {
  stopped: "Stopped",
  max_tokens: "Truncated — the reply reached its maximum length",
  refusal: "The model declined to answer",
  pause_turn: "Paused",
  stop_sequence: "Ended at a stop sequence",
  model_context_window_exceeded: "Truncated — the context window is full",
};

const ATTACHMENT_URL = "/attachments/";
const COPIED_FEEDBACK_MS = 1500;
const FEEDBACK_COMMENT_MAX_CHARS = 2000; // Feedback.COMMENT_MAX_CHARS on the server
// Replies that can be tried again in place (docs/protocol.md, `retry`).
const RETRY_STATUSES = new Set(["error", "interrupted"]);

/** Puts `text` on the clipboard: the Clipboard API, else a selected textarea and the copy
 * command (a page served over plain HTTP has no Clipboard API). */
async function copyToClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let done = false;
    try {
      done = document.execCommand("copy");
    } catch {
      done = false;
    }
    area.remove();
    return done;
  }
}

/** The id of an image block stored by us ({type: "image", attachment_id, …}), else 0. */
function attachmentId(block) {
  return Number.isInteger(block?.attachment_id) && block.attachment_id > 0 ? block.attachment_id : 0;
}

/** A larger view of an image in a modal dialog; Escape, the button or a click outside closes it. */
function showImage(url, alt) {
  let dialog = document.getElementById("image-viewer");
  if (!dialog) {
    dialog = el("dialog", "image-viewer");
    dialog.id = "image-viewer";
    dialog.dataset.testid = "image-viewer";
    const close = el("button", "button button-small image-viewer-close", "Close");
    close.type = "button";
    close.addEventListener("click", () => dialog.close());
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog.close();
    });
    dialog.append(close, el("img"));
    document.body.append(dialog);
  }
  const img = dialog.querySelector("img");
  img.src = url;
  img.alt = alt;
  dialog.showModal();
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The user-facing error text, saying it can be retried unless it already does. */
export function withRetryHint(text) {
  return /try again|retry/i.test(text) ? text : `${text} You can try again.`;
}

// One formatter per time zone, made once: toLocaleString builds a new one on every call, which
// cost ~10 ms a message on a phone (4× CPU slowdown) when a page drew its messages' times.
const timeFormats = new Map();
const NUMBER_FORMAT = new Intl.NumberFormat();

/** A date in the user's time zone (the browser's when the zone is unknown to it). */
function localTime(date, timeZone) {
  const key = timeZone || "";
  if (!timeFormats.has(key)) {
    const options = { dateStyle: "medium", timeStyle: "short" };
    let format;
    try {
      format = new Intl.DateTimeFormat(undefined, { ...options, timeZone });
    } catch {
      format = new Intl.DateTimeFormat(undefined, options);
    }
    timeFormats.set(key, format);
  }
  return timeFormats.get(key).format(date);
}

function numberText(n) {
  return NUMBER_FORMAT.format(Number(n || 0));
}

/** "1,024 in · 312 out · 2,048 cached · $0.0042" from a done frame's usage and cost. */
export function usageText(usage, cost, tokenCount) {
  const parts = [];
  if (usage && typeof usage === "object") {
    parts.push(`${numberText(usage.input_tokens)} in`, `${numberText(usage.output_tokens)} out`);
    const cacheRead = Number(usage.cache_read_input_tokens || 0);
    const cacheWrite = Number(usage.cache_creation_input_tokens || 0);
    if (cacheRead) parts.push(`${numberText(cacheRead)} cache read`);
    if (cacheWrite) parts.push(`${numberText(cacheWrite)} cache write`);
  } else if (tokenCount) {
    parts.push(`${numberText(tokenCount)} tokens`);
  }
  const dollars = Number(cost);
  if (cost !== undefined && cost !== null && cost !== "" && Number.isFinite(dollars)) {
    parts.push(`$${dollars < 0.01 && dollars > 0 ? dollars.toFixed(4) : dollars.toFixed(2)}`);
  }
  return parts.join(" · ");
}

/** A saved web search result as the live `tool` frame has it: "title — url" lines, or the error. */
function searchResultText(content) {
  if (content && !Array.isArray(content) && typeof content === "object") {
    return { text: `Search failed: ${content.error_code || "unknown"}`, isError: true };
  }
  const lines = (Array.isArray(content) ? content : [])
    .filter((item) => item?.type === "web_search_result")
    .map((item) => `${item.title || item.url} — ${item.url}`);
  return { text: lines.join("\n") || "No pages found.", isError: false };
}

function pagesText(n) {
  return n === 1 ? "1 page" : `${n.toLocaleString()} pages`;
}

function toolResultText(content) {
  if (content === undefined || content === null) return "";
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((b) => (b && b.type === "text" ? b.text : JSON.stringify(b))).join("\n");
  }
  return JSON.stringify(content, null, 2);
}

/** Thinking text, redacted thinking, tools (by id) and images found in a message's content. */
function extrasFromContent(content) {
  const thinking = [];
  let redacted = false;
  const tools = new Map();
  const images = [];
  const documents = [];
  for (const block of Array.isArray(content) ? content : []) {
    if (!block || typeof block !== "object") continue;
    if (block.type === "thinking" && typeof block.thinking === "string" && block.thinking) thinking.push(block.thinking);
    else if (block.type === "redacted_thinking") redacted = true;
    else if (block.type === "image") images.push(block);
    else if (block.type === "document") documents.push(block);
    else if (block.type === "web_search_tool_result") {
      const prev = tools.get(block.tool_use_id) || { id: block.tool_use_id, name: "web_search" };
      const result = searchResultText(block.content);
      tools.set(block.tool_use_id, { ...prev, result: result.text, isError: result.isError });
    }
    else if (block.type === "tool_use" || block.type === "server_tool_use") {
      const prev = tools.get(block.id) || {};
      tools.set(block.id, { ...prev, id: block.id, name: block.name, input: block.input });
    } else if (block.type === "tool_result") {
      const prev = tools.get(block.tool_use_id) || { id: block.tool_use_id, name: "tool" };
      tools.set(block.tool_use_id, { ...prev, result: block.content, isError: !!block.is_error });
    }
  }
  return { thinking: thinking.join("\n\n"), redacted, tools, images, documents };
}

/** JSON with every object's keys in order: the same blocks from the page (PostgreSQL's jsonb
 * orders keys its own way) and from a `done` frame give the same string. */
function canonicalJson(value) {
  return JSON.stringify(value, (_key, v) => (
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v
  ));
}

export class MessageList {
  /** container: the scrolling role="log" element. emptyNote: shown while there are no messages. */
  constructor(container, { assistantName, emptyNote, onAction, announce, timeZone }) {
    this.container = container;
    this.assistantName = assistantName;
    this.emptyNote = emptyNote;
    this.onAction = onAction || (() => {});
    this.announce = announce || (() => {});
    this.timeZone = timeZone || undefined;
    this.byId = new Map();
    this.pinned = true;
    container.addEventListener("click", (event) => {
      const marker = event.target.closest?.("button.cite-marker");
      if (marker) {
        this.toggleCitation(marker);
        return;
      }
      const link = event.target.closest?.("a.message-image");
      if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      showImage(link.href, link.querySelector("img")?.alt || "");
    });
    // Copied text leaves the citation markers out (they are not selectable either).
    container.addEventListener("copy", (event) => {
      const selection = window.getSelection();
      if (!selection || selection.isCollapsed || !event.clipboardData) return;
      const range = selection.getRangeAt(0);
      const holder = document.createElement("div");
      holder.append(range.cloneContents());
      if (!holder.querySelector(".cite-marker")) return;
      event.preventDefault();
      event.clipboardData.setData("text/plain", textWithoutMarkers(holder));
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.openCitation) {
        event.stopPropagation();
        this.closeCitation({ focus: true });
      }
    }, true);
    document.addEventListener("click", (event) => {
      if (!this.openCitation) return;
      const { marker, popover } = this.openCitation;
      if (marker.contains(event.target) || popover.contains(event.target)) return;
      this.closeCitation({ focus: false });
    });
    container.addEventListener("scroll", () => {
      const gap = container.scrollHeight - container.scrollTop - container.clientHeight;
      this.pinned = gap < PIN_THRESHOLD_PX;
    });
  }

  get(id) {
    return this.byId.get(Number(id));
  }

  /** The reply being written, if any. */
  get streaming() {
    for (const m of this.byId.values()) if (m.status === "streaming") return m;
    return null;
  }

  /** The page's saved messages: those the server drew (article[data-drawn]) are adopted, the
   * others drawn. One scroll to the end at the end, not one forced layout per message. */
  load(dicts) {
    this.loading = true;
    try {
      for (const dict of dicts) this.upsertSaved(dict);
    } finally {
      this.loading = false;
    }
    this.refreshActions();
    this.scrollToBottom();
  }

  /** Older messages (a page loaded on scroll), keeping what is on screen where it is. */
  prepend(dicts) {
    const before = this.container.scrollHeight;
    const top = this.container.scrollTop;
    for (const dict of dicts) if (!this.get(dict.id)) this.upsertSaved(dict);
    this.refreshActions();
    this.container.scrollTop = top + (this.container.scrollHeight - before);
  }

  /** The ids shown, in order. */
  ids() {
    return [...this.container.querySelectorAll("article[data-message-id]")].map((a) => Number(a.dataset.messageId));
  }

  /** The active branch changed: drop what follows `parentId` (null: everything), show `dicts`. */
  replaceAfter(parentId, dicts) {
    const ids = this.ids();
    // A parent not shown is older than everything shown (in a page not loaded yet): all goes.
    const cut = parentId === null || parentId === undefined ? 0 : ids.indexOf(Number(parentId)) + 1;
    for (const id of ids.slice(cut)) this.remove(id);
    for (const dict of dicts) this.upsertSaved(dict);
    this.refreshActions();
    if (this.pinned) this.scrollToBottom();
  }

  remove(id) {
    const m = this.get(id);
    if (!m) return;
    clearTimeout(m.renderTimer);
    clearTimeout(m.doneTimer);
    m.el.remove();
    this.byId.delete(m.id);
    if (this.emptyNote) this.emptyNote.hidden = this.byId.size > 0;
  }

  /** The actions each message offers depend on its place: run after structural changes. */
  refreshActions() {
    const ids = this.ids();
    const last = this.get(ids[ids.length - 1]);
    const busy = Boolean(this.streaming);
    for (const id of ids) this.renderActions(this.get(id), { isLast: this.get(id) === last, busy });
  }

  renderActions(m, { isLast, busy }) {
    if (!m || m.editing) return;
    const buttons = [];
    const button = (label, action, testid) => {
      const b = el("button", "button button-quiet button-small", label);
      b.type = "button";
      b.dataset.testid = testid;
      b.disabled = busy;
      b.addEventListener("click", () => this.onAction(action, m));
      buttons.push(b);
    };
    if (m.role === "assistant" && m.status !== "streaming") {
      if (isLast && m.stopReason === "max_tokens") button("Continue", "continue", "continue");
      // A failed reply is tried again in its place; a finished one gets a new version.
      if (isLast && RETRY_STATUSES.has(m.status)) button("Retry", "retry", "retry");
      else if (isLast) button("Regenerate", "regenerate", "regenerate");
      buttons.push(...this.replyTools(m));
    } else if (m.role === "user") {
      button("Edit", "edit", "edit");
    }
    m.actionsEl.replaceChildren(...buttons);
    if (m.feedbackForm && m.feedbackForm.parentNode !== m.footEl) m.footEl.append(m.feedbackForm);
    this.renderVersions(m, busy);
  }

  /** Copy, thumbs up and down, and the toggle of the reply's details (time, model, tokens,
   * cost): on a touch screen, where nothing hovers, the toggle is the way to them. */
  replyTools(m) {
    const copy = el("button", "button button-quiet button-small", "Copy");
    copy.type = "button";
    copy.dataset.testid = "copy-reply";
    copy.setAttribute("aria-label", "Copy the reply as Markdown");
    copy.addEventListener("click", () => this.copyReply(m, copy));
    const rating = (value, label, symbol) => {
      const b = el("button", "button button-quiet button-small feedback-button", symbol);
      b.type = "button";
      b.dataset.testid = `feedback-${value}`;
      b.setAttribute("aria-label", label);
      b.setAttribute("aria-pressed", String(m.feedback?.rating === value));
      b.addEventListener("click", () => this.rate(m, value));
      return b;
    };
    const details = el("button", "button button-quiet button-small meta-toggle", "Details");
    details.type = "button";
    details.dataset.testid = "meta-toggle";
    details.setAttribute("aria-expanded", String(m.metaOpen));
    details.setAttribute("aria-controls", `meta-${m.id}`);
    details.addEventListener("click", () => {
      m.metaOpen = !m.metaOpen;
      details.setAttribute("aria-expanded", String(m.metaOpen));
      m.metaEl.dataset.open = String(m.metaOpen);
    });
    return [copy, rating("up", "Good reply", "👍"), rating("down", "Bad reply", "👎"), details];
  }

  /** The reply's Markdown as saved (no citation markers: they are the page's) to the clipboard. */
  async copyReply(m, button) {
    const text = m.content.some((b) => b?.type === "text") ? blocksText(m.content) : m.text;
    const copied = await copyToClipboard(text);
    button.textContent = copied ? "Copied" : "Copy failed";
    this.announce(copied ? "Reply copied." : "The reply could not be copied.");
    clearTimeout(button.resetTimer);
    button.resetTimer = setTimeout(() => {
      button.textContent = "Copy";
    }, COPIED_FEEDBACK_MS);
  }

  /** A thumb: sent at once (the same thumb again takes it back), then an optional comment. */
  rate(m, value) {
    const rating = m.feedback?.rating === value ? "" : value;
    this.onAction("feedback", m, { rating, comment: "" });
    if (rating) this.startFeedbackComment(m, rating);
    else this.closeFeedbackComment(m);
  }

  startFeedbackComment(m, rating) {
    const form = el("form", "feedback-form");
    form.dataset.testid = "feedback-form";
    const label = el("label", "feedback-label", rating === "up" ? "What was good? (optional)" : "What went wrong? (optional)");
    const area = el("textarea", "feedback-comment");
    area.id = `feedback-${m.id}`;
    area.rows = 2;
    area.maxLength = FEEDBACK_COMMENT_MAX_CHARS;
    area.value = m.feedback?.comment || "";
    area.dataset.testid = "feedback-comment";
    label.htmlFor = area.id;
    const send = el("button", "button button-primary button-small", "Send");
    send.type = "submit";
    send.dataset.testid = "feedback-send";
    const skip = el("button", "button button-quiet button-small", "Skip");
    skip.type = "button";
    skip.addEventListener("click", () => this.closeFeedbackComment(m));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.onAction("feedback", m, { rating, comment: area.value.trim() });
      this.closeFeedbackComment(m);
    });
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        this.closeFeedbackComment(m);
      }
    });
    const bar = el("div", "edit-bar");
    bar.append(skip, send);
    form.append(label, area, bar);
    m.feedbackForm?.remove();
    m.feedbackForm = form;
    this.refreshActions();
    area.focus();
  }

  closeFeedbackComment(m) {
    if (!m.feedbackForm) return;
    m.feedbackForm.remove();
    m.feedbackForm = null;
    this.refreshActions();
  }

  /** The rating the server saved (null: none). */
  setFeedback(m, feedback) {
    m.feedback = feedback && typeof feedback === "object" ? feedback : null;
    this.refreshActions();
  }

  renderVersions(m, busy) {
    const versions = m.versions || [m.id];
    if (versions.length < 2) {
      m.versionsEl.hidden = true;
      m.versionsEl.replaceChildren();
      return;
    }
    const index = versions.indexOf(m.id);
    const prev = el("button", "button button-quiet button-small", "‹");
    prev.type = "button";
    prev.dataset.testid = "version-prev";
    prev.setAttribute("aria-label", "Previous version");
    prev.disabled = busy || index <= 0;
    prev.addEventListener("click", () => this.onAction("switch", m, versions[index - 1]));
    const next = el("button", "button button-quiet button-small", "›");
    next.type = "button";
    next.dataset.testid = "version-next";
    next.setAttribute("aria-label", "Next version");
    next.disabled = busy || index >= versions.length - 1;
    next.addEventListener("click", () => this.onAction("switch", m, versions[index + 1]));
    const label = el("span", "version-label", `${index + 1}/${versions.length}`);
    label.dataset.testid = "version-label";
    m.versionsEl.replaceChildren(prev, label, next);
    m.versionsEl.hidden = false;
  }

  /** An inline editor in place of a user message's text; `onSave(text)` sends the edit. */
  startEdit(m, onSave) {
    if (m.editing) return;
    m.editing = true;
    const form = el("form", "edit-form");
    form.dataset.testid = "edit-form";
    const label = el("label", "visually-hidden", "Edit your message");
    const area = el("textarea", "edit-input");
    area.id = `edit-${m.id}`;
    label.htmlFor = area.id;
    area.value = m.text;
    area.rows = Math.min(12, Math.max(2, m.text.split("\n").length));
    area.dataset.testid = "edit-input";
    const save = el("button", "button button-primary button-small", "Save and send");
    save.type = "submit";
    save.dataset.testid = "edit-save";
    const cancel = el("button", "button button-quiet button-small", "Cancel");
    cancel.type = "button";
    cancel.dataset.testid = "edit-cancel";
    const close = () => {
      m.editing = false;
      form.remove();
      m.bodyEl.hidden = false;
      this.refreshActions();
      m.el.focus();
    };
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        close();
      } else if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = area.value.trim();
      if (!text) return;
      if (onSave(text)) close();
    });
    form.append(label, area, el("div", "edit-bar"));
    form.lastChild.append(cancel, save);
    m.bodyEl.hidden = true;
    m.actionsEl.replaceChildren();
    m.bodyEl.after(form);
    area.focus();
  }

  /** Inserts or replaces a saved message (page data or a `message` frame). */
  upsertSaved(dict) {
    let m = this.get(dict.id);
    const isNew = !m;
    if (isNew) m = this.create(dict.id, dict.role || "assistant");
    const live = !isNew && m.status === "streaming" && m.lastSeq > 0;
    const stillStreaming = dict.status === "streaming";
    // A checkpoint of a reply we are streaming may be behind the deltas we have; once the reply
    // is saved as finished, its text is the truth.
    if (!(live && stillStreaming)) {
      m.text = dict.text || "";
      m.content = Array.isArray(dict.content) ? dict.content : [];
      m.splits = splitsOf(m.content);
      m.seqLength = new Map();
      if (Number.isInteger(dict.seq)) m.seqLength.set(dict.seq, m.text.length);
    }
    if ("feedback" in dict) m.feedback = dict.feedback && typeof dict.feedback === "object" ? dict.feedback : null;
    m.status = dict.status || "done";
    m.stopReason = dict.stop_reason || "";
    m.errorCode = dict.error_code || "";
    m.errorMessage = dict.error_message || "";
    m.retryable = RETRYABLE_CODES.has(m.errorCode);
    m.tokenCount = dict.token_count ?? null;
    m.clientId = dict.client_id || null;
    m.parentId = dict.parent_id ?? null;
    if (Array.isArray(dict.versions) && dict.versions.length) m.versions = dict.versions.map(Number);
    m.createdAt = dict.created_at || m.createdAt;
    // The last seq applied to the saved text: a Continue or a resume numbers on from it.
    if (!(live && stillStreaming) && Number.isInteger(dict.seq)) {
      m.lastSeq = dict.seq;
      m.maxSeenSeq = Math.max(m.maxSeenSeq, dict.seq);
    }
    if (dict.usage && typeof dict.usage === "object") {
      m.usage = dict.usage;
      m.cost = dict.usage.cost ?? m.cost;
      m.model = dict.usage.model || m.model;
    }
    this.applyExtras(m, dict.content);
    const extras = extrasFromContent(dict.content);
    m.images = extras.images;
    m.documents = extras.documents;
    this.renderImages(m);
    this.renderDocuments(m);
    if (!(live && stillStreaming)) m.streamer = null; // its text was replaced: render afresh
    if (stillStreaming) this.renderAll(m, { final: false });
    else this.renderFinished(m);
    return m;
  }

  /** A finished reply's saved blocks (a `done` frame's `content`): its tool steps, thinking and
   * citations; render afterwards. */
  applyContent(m, content) {
    if (!Array.isArray(content)) return;
    m.content = content;
    this.applyExtras(m, content);
  }

  /** Thinking and tool steps from saved content (the saved message is the truth for them). */
  applyExtras(m, content) {
    const extras = extrasFromContent(content);
    if (extras.thinking || !m.thinking) m.thinking = extras.thinking;
    m.thinkingRedacted = m.thinkingRedacted || extras.redacted;
    if (extras.tools.size || !m.tools.size) m.tools = extras.tools;
  }

  /** A `thinking` frame: its text joins the reply's thinking, shown as it streams. */
  addThinking(m, text) {
    if (!text) return;
    if (m.thinkingSince === null) {
      // A new stretch of thinking (a later tool round's): a paragraph of its own.
      if (m.thinking) m.thinking += "\n\n";
      m.thinkingSince = performance.now();
      m.thinkingTimed = true;
    }
    m.thinking += text;
    this.renderThinking(m);
  }

  /** The reply moved on from thinking (text, a tool step, its end): the panel collapses. */
  endThinking(m) {
    if (m.thinkingSince === null) return;
    m.thinkingMs += performance.now() - m.thinkingSince;
    m.thinkingSince = null;
    this.renderThinking(m);
  }

  /** The entry for a reply known only from a frame (`start`, or a delta of a reply we never saw start). */
  ensureStreaming(id) {
    let m = this.get(id);
    if (!m) {
      m = this.create(id, "assistant");
      m.status = "streaming";
      this.renderAll(m, { final: false });
    }
    return m;
  }

  create(id, role) {
    const m = {
      id: Number(id), role, text: "", baseText: "", status: "done", stopReason: "",
      errorCode: "", errorMessage: "", retryable: false, tokenCount: null, usage: null,
      cost: null, thinking: "", thinkingRedacted: false, thinkingSince: null, thinkingMs: 0,
      thinkingTimed: false, thinkingOpen: null, thinkingEl: null, tools: new Map(), images: [], imagesKey: "", lastSeq: 0, maxSeenSeq: 0,
      note: "", renderTimer: null, lastRenderAt: 0, clientId: null, parentId: null, versions: [Number(id)],
      createdAt: null, model: null, streamer: null, editing: false, content: [], documents: [],
      documentsKey: "",
      // Tool steps among the text: where each came ({id, at} or {id, seq}), the text's length
      // after each delta, and the body's parts (text runs and step groups) in order.
      splits: [], seqLength: new Map(), parts: [],
      feedback: null, feedbackForm: null, metaOpen: false,
      drawn: false, // drawn by the server; its body is kept by the first final render
      finalKey: null, // what the last saved copy rendered showed (upsertSaved)
    };
    const drawn = this.container.querySelector(`article[data-drawn][data-message-id="${m.id}"]`);
    if (drawn) {
      this.adopt(m, drawn);
      return m;
    }
    const article = el("article", `message message-${role}`);
    article.dataset.testid = "message";
    article.dataset.role = role;
    article.dataset.messageId = String(m.id);
    const author = el("div", "message-author", role === "user" ? "You" : this.assistantName);
    m.extrasEl = el("div", "message-extras");
    m.imagesEl = el("div", "message-images");
    m.imagesEl.dataset.testid = "message-images";
    m.imagesEl.hidden = true;
    m.documentsEl = el("ul", "message-documents");
    m.documentsEl.dataset.testid = "message-documents";
    m.documentsEl.setAttribute("aria-label", "Attached documents");
    m.documentsEl.hidden = true;
    m.bodyEl = el("div", role === "assistant" ? "message-body markdown" : "message-body plain");
    m.bodyEl.dataset.testid = "message-body";
    m.sourcesEl = el("div", "message-sources");
    m.sourcesEl.dataset.testid = "sources";
    m.sourcesEl.hidden = true;
    m.statusEl = el("div", "message-status");
    m.statusEl.dataset.testid = "message-status";
    m.footEl = el("div", "message-foot");
    m.versionsEl = el("nav", "message-versions");
    m.versionsEl.dataset.testid = "versions";
    m.versionsEl.setAttribute("aria-label", "Versions");
    m.versionsEl.hidden = true;
    m.actionsEl = el("div", "message-actions");
    m.actionsEl.dataset.testid = "message-actions";
    m.metaEl = el("div", "message-meta");
    m.metaEl.id = `meta-${m.id}`;
    m.metaEl.dataset.testid = "message-meta";
    m.footEl.append(m.versionsEl, m.actionsEl, m.metaEl);
    article.tabIndex = -1;
    article.append(author, m.extrasEl, m.imagesEl, m.documentsEl, m.bodyEl, m.sourcesEl, m.statusEl, m.footEl);
    m.el = article;
    this.byId.set(m.id, m);
    this.insertInOrder(article, m.id);
    if (this.emptyNote) this.emptyNote.hidden = true;
    return m;
  }

  /** A message the server drew (templates/chat/drawn_messages.html, the same elements as
   * create's): its elements are taken as they are, and its body is kept by the first final
   * render (renderCited) rather than rendered again. */
  adopt(m, article) {
    const part = (name) => article.querySelector(`:scope > .${name}`);
    m.extrasEl = part("message-extras");
    m.imagesEl = part("message-images");
    m.documentsEl = part("message-documents");
    m.bodyEl = part("message-body");
    m.sourcesEl = part("message-sources");
    m.statusEl = part("message-status");
    m.footEl = part("message-foot");
    m.versionsEl = m.footEl.querySelector(".message-versions");
    m.actionsEl = m.footEl.querySelector(".message-actions");
    m.metaEl = m.footEl.querySelector(".message-meta");
    const thinking = m.extrasEl.querySelector(":scope > .thinking");
    if (thinking) {
      m.thinkingEl = thinking;
      this.bindThinkingToggle(m, thinking.querySelector(":scope > .thinking-toggle"));
    }
    m.drawn = true;
    delete article.dataset.drawn;
    m.el = article;
    this.byId.set(m.id, m);
    if (this.emptyNote) this.emptyNote.hidden = true;
  }

  insertInOrder(article, id) {
    for (const child of this.container.children) {
      const childId = Number(child.dataset.messageId);
      if (child.dataset.messageId && childId > id) {
        this.container.insertBefore(article, child);
        return;
      }
    }
    this.container.append(article);
  }

  /** A finished message rendered. The same finished message again (the answer to `resume` is
   * the last reply, or its replayed deltas and `done`, which the page already shows) keeps its
   * body: only what is around it may have changed. */
  renderFinished(m) {
    const key = canonicalJson([m.status, m.stopReason, m.text, m.content]);
    if (key === m.finalKey) {
      this.renderExtras(m);
      this.renderStatus(m);
    } else {
      this.renderAll(m, { final: true });
    }
    m.finalKey = key;
  }

  renderAll(m, { final }) {
    this.renderBody(m, { final });
    this.renderExtras(m);
    this.renderStatus(m);
  }

  /** Re-renders the body soon: at most every RENDER_INTERVAL_MS, on an animation frame. */
  scheduleBody(m) {
    if (m.renderTimer) return;
    const wait = Math.max(0, RENDER_INTERVAL_MS - (performance.now() - m.lastRenderAt));
    const timer = setTimeout(() => {
      requestAnimationFrame(() => {
        // A render in between (the final one, at `done`) cancelled this one.
        if (m.renderTimer !== timer) return;
        m.renderTimer = null;
        this.renderBody(m, { final: false });
      });
    }, wait);
    m.renderTimer = timer;
  }

  renderBody(m, { final }) {
    if (m.renderTimer) {
      clearTimeout(m.renderTimer);
      m.renderTimer = null;
    }
    m.lastRenderAt = performance.now();
    const keepPinned = this.pinned;
    if (m.drawn) {
      // Drawn by the server from this same text: kept; its code is coloured in later tasks.
      m.drawn = false;
      const body = m.bodyEl.firstElementChild;
      if (m.role === "assistant" && final && body) {
        m.parts = [{ kind: "text", el: body, text: null }];
        m.cited = null;
        colourCodeBlocks(body);
        return;
      }
    }
    if (m.role === "assistant") {
      if (final) {
        m.streamer = null;
        this.renderCited(m);
      } else {
        m.finalKey = null; // the text is changing: the next saved copy is rendered
        this.renderStreaming(m);
      }
    } else {
      m.bodyEl.textContent = m.text;
      // Images stored by us are shown as thumbnails (renderImages); others only as a count.
      const other = m.images.filter((image) => !attachmentId(image)).length;
      if (other) m.bodyEl.prepend(el("span", "attachment-chip", other === 1 ? "1 image" : `${other} images`));
    }
    if (keepPinned) this.scrollToBottom();
  }

  /** The reply being written: its text runs and tool steps in the order they came. Only the
   * last run is re-rendered as text streams (incrementally); earlier runs once each. */
  renderStreaming(m) {
    const items = streamedFlow(m.text, m.splits, m.seqLength);
    this.syncParts(m, items);
    items.forEach((item, index) => {
      const part = m.parts[index];
      if (item.kind === "steps") return;
      if (index === items.length - 1) {
        if (m.streamer?.target !== part.el) {
          m.streamer = new StreamingMarkdown(part.el, {
            onFrozen: (chunk) => this.announce(chunk.textContent),
          });
        }
        m.streamer.update(item.text);
        part.text = null;
      } else if (part.text !== item.text) {
        renderInto(part.el, item.text, { final: false });
        part.text = rendererReady() ? item.text : null; // shown as written: rendered next time
      }
    });
  }

  /** The body's parts for `items`, in order: a part of the same kind at the same place is kept
   * (its text and open steps stay), others are made anew; step groups are filled. */
  syncParts(m, items) {
    m.parts = items.map((item, index) => {
      const old = m.parts[index];
      const part = old && old.kind === item.kind ? old : this.makePart(item.kind);
      if (item.kind === "steps") {
        part.ids = item.ids;
        this.fillSteps(m, part);
      }
      return part;
    });
    const els = m.parts.map((part) => part.el);
    if (els.length !== m.bodyEl.children.length || els.some((e, i) => m.bodyEl.children[i] !== e)) {
      m.bodyEl.replaceChildren(...els);
    }
  }

  makePart(kind) {
    if (kind === "steps") {
      const group = el("div", "message-steps");
      group.dataset.testid = "tool-steps";
      return { kind, el: group, ids: [] };
    }
    const part = el("div", "message-part");
    part.dataset.testid = "message-part";
    return { kind, el: part, text: null };
  }

  /** The group's steps, rebuilt only when one changed (so a focused step keeps focus while
   * text streams). */
  fillSteps(m, part) {
    const tools = part.ids.map((id) => m.tools.get(id)).filter(Boolean);
    const key = JSON.stringify([m.status, tools.map((t) => [t.id, t.name, t.input, t.result, t.isError])]);
    if (key === part.key) return;
    part.key = key;
    part.el.replaceChildren(...tools.map((tool) => this.toolElement(m, tool)));
  }

  /** A finished reply's parts: from its saved blocks (the order they have), else from where
   * its steps came while it streamed. */
  finalItems(m, cited) {
    const flow = flowOf(m.content);
    let items;
    if (flow.some((item) => item.kind === "steps")) {
      items = flow.map((item) => {
        if (item.kind === "steps") return item;
        const text = cited
          ? cited.markdown.slice(cited.offsets[item.start], cited.offsets[item.end])
          : blocksText(m.content.slice(item.start, item.end));
        return { kind: "text", text };
      });
    } else if (m.splits.length) {
      items = streamedFlow(m.text, m.splits, m.seqLength);
    } else {
      items = [{ kind: "text", text: cited ? cited.markdown : m.text }];
    }
    // A step known only from a frame, with no place: before the text, as it came first.
    const placed = new Set(items.flatMap((item) => (item.kind === "steps" ? item.ids : [])));
    const unplaced = [...m.tools.keys()].filter((id) => !placed.has(id));
    if (unplaced.length) items.unshift({ kind: "steps", ids: unplaced });
    return items;
  }

  /** The reply's text and tool steps in order, with citation markers and a Sources list when
   * its blocks cite anything. */
  renderCited(m) {
    if (this.openCitation?.m === m) this.closeCitation({ focus: false });
    const cited = m.role === "assistant" && m.status !== "streaming" ? citationsOf(m.content) : null;
    m.cited = cited;
    const items = this.finalItems(m, cited);
    this.syncParts(m, items);
    let complete = true;
    items.forEach((item, index) => {
      if (item.kind !== "text") return;
      complete = renderInto(m.parts[index].el, item.text, { final: true }) && complete;
      m.parts[index].text = null; // a final render: a later streaming one starts afresh
    });
    // Rendered before marked and DOMPurify, or a formula before KaTeX, had arrived (shown as
    // written, or as its source): render it again once they have.
    if (!complete) {
      renderingReady().then(
        () => {
          if (this.get(m.id) === m && m.status !== "streaming") this.renderBody(m, { final: true });
        },
        () => {}, // could not be fetched: the text stays as written, the formulas as their source
      );
      if (!rendererReady()) return; // markers and sources come with the render
    }
    if (!cited) {
      m.sourcesEl.replaceChildren();
      m.sourcesEl.hidden = true;
      return;
    }
    placeMarkers(
      m.bodyEl,
      cited,
      (index) => cited.blocks[index].numbers.map((number) => this.citationMarker(m, cited, index, number)),
      { skip: ".message-steps" },
    );
    this.renderSources(m, cited);
  }

  citationMarker(m, cited, blockIndex, number) {
    const source = cited.sources[number - 1];
    const marker = el("button", "cite-marker", `[${number}]`);
    marker.type = "button";
    marker.dataset.testid = "cite-marker";
    marker.dataset.source = String(number);
    marker.dataset.block = String(blockIndex);
    marker.setAttribute("aria-label", `Source ${number}: ${source.title}`);
    marker.setAttribute("aria-expanded", "false");
    marker.setAttribute("aria-controls", `cite-${m.id}`);
    return marker;
  }

  renderSources(m, cited) {
    const items = cited.sources.map((source) => {
      const item = el("li", `source source-${source.kind}`);
      item.dataset.testid = "source";
      item.dataset.source = String(source.number);
      item.id = `source-${m.id}-${source.number}`;
      item.append(el("span", "source-number", `[${source.number}]`), sourceTitle(source));
      for (const detail of sourceDetails(source)) item.append(" · ", detail);
      return item;
    });
    const list = el("ol", "source-list");
    list.setAttribute("aria-labelledby", `sources-${m.id}`);
    list.append(...items);
    const heading = el("div", "sources-heading", "Sources");
    heading.id = `sources-${m.id}`;
    m.sourcesEl.replaceChildren(heading, list);
    m.sourcesEl.hidden = false;
  }

  /** A marker's cited text and source in a popover under it; a second click closes it. */
  toggleCitation(marker) {
    const wasOpen = this.openCitation?.marker === marker;
    this.closeCitation({ focus: false });
    if (wasOpen) return;
    const m = this.get(marker.closest("article")?.dataset.messageId);
    const cited = m?.cited;
    if (!cited) return;
    const number = Number(marker.dataset.source);
    const block = cited.blocks[Number(marker.dataset.block)];
    const source = cited.sources[number - 1];
    if (!block || !source) return;
    const popover = el("div", "cite-popover");
    popover.id = `cite-${m.id}`;
    popover.dataset.testid = "cite-popover";
    popover.setAttribute("role", "dialog");
    popover.setAttribute("aria-label", `Source ${number}`);
    popover.tabIndex = -1;
    for (const { number: n, citation } of block.citations) {
      if (n !== number || typeof citation.cited_text !== "string" || !citation.cited_text) continue;
      const quote = el("blockquote", "cite-quote", citation.cited_text);
      quote.dataset.testid = "cited-text";
      popover.append(quote);
    }
    const line = el("p", "cite-source");
    line.append(el("span", "source-number", `[${number}]`), " ", sourceTitle(source));
    for (const detail of sourceDetails(source)) line.append(" · ", detail);
    popover.append(line);
    m.el.append(popover);
    const at = marker.getBoundingClientRect();
    const box = m.el.getBoundingClientRect();
    popover.style.top = `${at.bottom - box.top + 4}px`;
    const left = Math.min(at.left - box.left, Math.max(0, box.width - popover.offsetWidth));
    popover.style.left = `${Math.max(0, left)}px`;
    marker.setAttribute("aria-expanded", "true");
    this.openCitation = { m, marker, popover };
    popover.focus({ preventScroll: true });
  }

  closeCitation({ focus }) {
    const open = this.openCitation;
    if (!open) return;
    this.openCitation = null;
    open.popover.remove();
    open.marker.setAttribute("aria-expanded", "false");
    if (focus && open.marker.isConnected) open.marker.focus();
  }

  /** The documents of a user's message, as chips (name, pages) linking to the file. */
  renderDocuments(m) {
    const key = JSON.stringify(m.documents.map((d) => [d.attachment_id, d.title, d.page_count]));
    if (key === m.documentsKey) return;
    m.documentsKey = key;
    const chips = m.documents.map((doc, index) => {
      const item = el("li", "document-chip");
      item.dataset.testid = "message-document";
      const name = typeof doc.title === "string" && doc.title ? doc.title : `Document ${index + 1}`;
      const id = attachmentId(doc);
      const label = id ? el("a", "document-name", name) : el("span", "document-name", name);
      if (id) {
        label.href = `${ATTACHMENT_URL}${id}/`;
        label.target = "_blank";
        label.rel = "noopener noreferrer";
      }
      item.append(el("span", "document-icon", doc.media_type === "application/pdf" ? "PDF" : "TXT"), label);
      if (Number.isInteger(doc.page_count) && doc.page_count > 0) {
        item.append(el("span", "document-pages", pagesText(doc.page_count)));
      }
      return item;
    });
    m.documentsEl.replaceChildren(...chips);
    m.documentsEl.hidden = chips.length === 0;
  }

  /** Thumbnails of the message's images; rebuilt only when the images change. */
  renderImages(m) {
    const ids = m.images.map(attachmentId).filter(Boolean);
    const key = ids.join(",");
    if (key === m.imagesKey) return;
    m.imagesKey = key;
    const links = m.images.filter(attachmentId).map((image, index) => {
      const url = `${ATTACHMENT_URL}${attachmentId(image)}/`;
      const link = el("a", "message-image");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      link.dataset.testid = "message-image";
      const img = el("img");
      img.src = url;
      img.alt = `Attached image ${index + 1}`;
      img.loading = "lazy";
      if (Number.isInteger(image.width) && Number.isInteger(image.height)) {
        img.width = image.width;
        img.height = image.height;
      }
      link.append(img);
      return link;
    });
    m.imagesEl.replaceChildren(...links);
    m.imagesEl.hidden = links.length === 0;
  }

  /** Thinking above the reply; tool steps are in the body, among the text (renderBody). */
  renderExtras(m) {
    const nodes = [];
    if (m.thinking || m.thinkingRedacted) nodes.push(this.renderThinking(m, { place: false }));
    for (const part of m.parts) if (part.kind === "steps") this.fillSteps(m, part);
    m.extrasEl.replaceChildren(...nodes);
    m.extrasEl.hidden = nodes.length === 0;
    if (this.pinned) this.scrollToBottom();
  }

  /**
   * The thinking panel: a button (aria-expanded) over the thinking text, which is inserted as
   * text. Open while the model thinks, then collapsed to "Thought for N s" (or "Thinking" for a
   * saved reply, whose timing is unknown) unless the reader opened or closed it. Kept across
   * renders, so the button keeps focus while thinking streams.
   */
  renderThinking(m, { place = true } = {}) {
    if (!m.thinkingEl) {
      const panel = el("div", "thinking");
      panel.dataset.testid = "thinking";
      const toggle = el("button", "thinking-toggle");
      toggle.type = "button";
      toggle.dataset.testid = "thinking-toggle";
      const region = el("div", "thinking-body");
      region.id = `thinking-${m.id}`;
      region.dataset.testid = "thinking-body";
      toggle.setAttribute("aria-controls", region.id);
      this.bindThinkingToggle(m, toggle);
      const text = el("div", "thinking-text");
      text.dataset.testid = "thinking-text";
      const note = el("p", "thinking-redacted", "Some thinking was redacted.");
      note.dataset.testid = "thinking-redacted";
      region.append(text, note);
      panel.append(toggle, region);
      m.thinkingEl = panel;
    }
    const [toggle, region] = m.thinkingEl.children;
    const [text, note] = region.children;
    const active = m.thinkingSince !== null && m.status === "streaming";
    let label = "Thinking";
    if (active) label = "Thinking…";
    else if (m.thinkingTimed && m.thinkingMs > 0) label = `Thought for ${Math.max(1, Math.round(m.thinkingMs / 1000))} s`;
    toggle.textContent = label;
    // Redacted thinking alone has nothing to hide: its note shows.
    const open = m.thinkingOpen ?? (active || !m.thinking);
    toggle.setAttribute("aria-expanded", String(open));
    region.hidden = !open;
    if (text.textContent !== m.thinking) text.textContent = m.thinking;
    text.hidden = !m.thinking;
    note.hidden = !m.thinkingRedacted;
    m.thinkingEl.dataset.state = active ? "thinking" : "done";
    if (active && open) text.scrollTop = text.scrollHeight;
    if (place && m.thinkingEl.parentNode !== m.extrasEl) this.renderExtras(m);
    return m.thinkingEl;
  }

  bindThinkingToggle(m, toggle) {
    toggle.addEventListener("click", () => {
      m.thinkingOpen = toggle.getAttribute("aria-expanded") !== "true";
      this.renderThinking(m);
    });
  }

  /** A `tool` frame: the step is shown where it came, after the text streamed before it. */
  toolStep(m, frame) {
    const known = m.tools.get(frame.id);
    const prev = known || { id: frame.id };
    const tool = { ...prev, name: frame.name ?? prev.name, input: frame.input ?? prev.input };
    if (frame.result !== undefined && frame.result !== null) {
      tool.result = frame.result;
      tool.isError = Boolean(frame.is_error);
    }
    m.tools.set(frame.id, tool);
    if (!known && !m.splits.some((split) => split.id === frame.id)) {
      m.splits.push(Number.isInteger(frame.seq) ? { id: frame.id, seq: frame.seq } : { id: frame.id, at: m.text.length });
    }
    this.endThinking(m);
    this.renderBody(m, { final: m.status !== "streaming" });
  }

  toolElement(m, tool) {
    const previous = [...m.bodyEl.querySelectorAll("details.tool")].find((d) => d.dataset.toolId === String(tool.id));
    const wasOpen = previous?.open;
    const details = el("details", `tool${tool.isError ? " tool-error" : ""}`);
    details.dataset.testid = "tool";
    details.dataset.toolId = String(tool.id);
    details.dataset.toolName = String(tool.name || "tool");
    details.open = wasOpen ?? false;
    const summary = el("summary");
    const state = tool.result === undefined ? (m.status === "streaming" ? "running…" : "") : tool.isError ? "failed" : "done";
    details.dataset.state = tool.result === undefined ? (m.status === "streaming" ? "running" : "") : tool.isError ? "failed" : "done";
    const query = tool.name === "web_search" && typeof tool.input?.query === "string" ? tool.input.query : null;
    if (query !== null) summary.append("Web search ", el("q", "tool-query", query), state ? ` — ${state}` : "");
    else summary.append("Tool ", el("code", "", tool.name || "tool"), state ? ` — ${state}` : "");
    details.append(summary);
    details.append(el("div", "tool-label", "Input"));
    details.append(el("pre", "tool-data", JSON.stringify(tool.input ?? {}, null, 2)));
    if (tool.result !== undefined) {
      details.append(el("div", "tool-label", tool.isError ? "Error" : "Result"));
      details.append(el("pre", "tool-data", toolResultText(tool.result)));
    }
    return details;
  }

  renderStatus(m) {
    const article = m.el;
    article.dataset.status = m.status;
    article.dataset.stopReason = m.stopReason || "";
    article.setAttribute("aria-busy", m.status === "streaming" ? "true" : "false");
    const nodes = [];
    if (m.status === "streaming") {
      const indicator = el("span", "typing-indicator");
      indicator.setAttribute("aria-hidden", "true");
      indicator.append(el("span"), el("span"), el("span"));
      nodes.push(indicator, el("span", "state-label", "Writing…"));
    } else if (m.status === "interrupted") {
      nodes.push(el("span", "badge badge-warning", "Interrupted — the reply was cut off"));
    } else if (m.status === "error") {
      nodes.push(el("span", "badge badge-error", "Error"));
      const detail = m.errorMessage || "The reply failed.";
      nodes.push(el("span", "error-text", m.retryable ? withRetryHint(detail) : detail));
    } else if (STOP_NOTES[m.stopReason]) {
      nodes.push(el("span", `badge ${m.stopReason === "stopped" ? "badge-muted" : "badge-warning"}`, STOP_NOTES[m.stopReason]));
    }
    if (m.note) nodes.push(el("span", "state-label", m.note));
    m.statusEl.replaceChildren(...nodes);
    m.statusEl.hidden = nodes.length === 0;
    this.renderMeta(m);
    if (this.pinned) this.scrollToBottom();
  }

  /** Shown on hover or focus: when, which model, tokens and cost. */
  renderMeta(m) {
    const parts = [];
    if (m.status === "streaming") {
      m.metaEl.replaceChildren(); // filled in when the reply ends
      return;
    }
    if (m.createdAt) {
      const when = new Date(m.createdAt);
      const time = el("time", "", localTime(when, this.timeZone));
      time.dateTime = m.createdAt;
      parts.push(time);
    }
    if (m.role === "assistant" && m.model) parts.push(el("span", "meta-model", m.model));
    const usage = m.role === "assistant" && m.status !== "streaming" ? usageText(m.usage, m.cost, m.tokenCount) : "";
    if (usage) {
      const line = el("span", "usage", usage);
      line.dataset.testid = "usage";
      parts.push(line);
    }
    m.metaEl.replaceChildren(...parts.flatMap((p, i) => (i ? [" · ", p] : [p])));
  }

  scrollToBottom() {
    if (this.loading) return; // load() scrolls once, at its end
    this.container.scrollTop = this.container.scrollHeight;
    this.pinned = true;
  }
}
