// The chat page: the composer, the conversation's socket and the protocol frames between them.
// Frames are described in docs/protocol.md ("WebSocket protocol").

import { ChatSocket, socketUrl } from "./socket.js";
import { MessageList, withRetryHint } from "./messages.js";
import { installCopyHandler, loadMath, loadRenderer, mayHaveMath } from "./render.js";
import { AttachmentTray } from "./attachments.js";
import {
  setupSidebar, setupShortcuts, applyTheme, autoGrow, postJson, refreshList, setupSearch, setupMenus,
  setupImport, setupUndoToast,
} from "./ui.js";
import { ThinkingPicker } from "./thinking.js";
import { WebSearchToggle } from "./websearch.js";
import { setupScrollButton } from "./scrolldown.js";

// A delta that skips ahead waits this long for the missing ones before asking for a replay.
const GAP_RESUME_DELAY_MS = 700;
// A `done` that arrives with deltas missing waits this long for the replay before giving up.
const DONE_GAP_GRACE_MS = 3000;

function readConfig() {
  const node = document.getElementById("chat-config");
  if (!node) return null;
  try {
    return JSON.parse(node.textContent);
  } catch {
    return null;
  }
}

/** A v4 UUID; crypto.randomUUID only exists on secure origins (https, localhost). */
export function newClientId() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The text to send: leading blank lines and trailing whitespace dropped, indentation kept. */
export function normaliseText(raw) {
  return raw.replace(/^(?:[ \t]*\r?\n)+/, "").trimEnd();
}

/** Characters as the server counts them (code points, not UTF-16 units). */
function characterCount(text) {
  let n = 0;
  for (const _ of text) n += 1;
  return n;
}

// A page in a background tab gets no animation frames: it goes on after this long anyway.
const FIRST_PAINT_WAIT_MS = 100;

/** Resolves once the page has been painted (in the task after the next frame's). */
function afterFirstPaint() {
  return new Promise((resolve) => {
    requestAnimationFrame(() => setTimeout(resolve, 0));
    setTimeout(resolve, FIRST_PAINT_WAIT_MS);
  });
}

function setupConfirmForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

function setupSidebarToggle() {
  const toggle = document.querySelector("[data-sidebar-toggle]");
  const sidebar = document.getElementById("sidebar");
  if (!toggle || !sidebar) return;
  const setOpen = (open) => {
    document.body.classList.toggle("sidebar-open", open);
    toggle.setAttribute("aria-expanded", String(open));
  };
  toggle.addEventListener("click", () => setOpen(!document.body.classList.contains("sidebar-open")));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.classList.contains("sidebar-open")) {
      setOpen(false);
      toggle.focus();
    }
  });
  // On narrow screens the sidebar is a drawer: a click outside it closes it.
  document.addEventListener("click", (event) => {
    if (!document.body.classList.contains("sidebar-open")) return;
    if (sidebar.contains(event.target) || toggle.contains(event.target)) return;
    setOpen(false);
  });
}

class ChatPage {
  constructor(root, config) {
    this.config = config;
    this.maxChars = Number(config.max_chars) || 100_000;
    this.loginUrl = root.dataset.loginUrl || "/login/";
    this.form = root.querySelector("#composer");
    this.input = root.querySelector("#composer-input");
    this.sendButton = root.querySelector("#send");
    this.stopButton = root.querySelector("#stop");
    this.statusEl = root.querySelector("#connection-status");
    this.reconnectButton = root.querySelector("#reconnect");
    this.noticeEl = root.querySelector("#composer-notice");
    this.attachments = new AttachmentTray(root, {
      onChange: () => {
        this.updateControls();
        this.sendAfterUploads();
      },
      notice: (text) => this.notice(text),
    });
    // The message being sent: kept until its ack so nothing typed is lost while offline.
    this.pending = null;
    // Enter pressed while attachments upload: send when they are ready.
    this.sendWhenUploaded = false;
    this.gapTimer = null;
    this.stopping = false;
    this.connectionState = "connecting";

    this.model = config.model || null;
    this.modelPicker = document.getElementById("model-picker");
    this.announcer = root.querySelector("#announcer");
    this.hasMore = Boolean(config.has_more);
    this.loadingOlder = false;
    this.olderEl = root.querySelector("#load-older");

    const messagesEl = root.querySelector("#messages");
    this.messagesEl = messagesEl;
    this.scrollButton = root.querySelector("#scroll-bottom");
    installCopyHandler(messagesEl);
    this.list = new MessageList(messagesEl, {
      assistantName: root.dataset.assistantName || "Claude",
      emptyNote: root.querySelector("#messages-empty"),
      onAction: (action, m, target) => this.onAction(action, m, target),
      announce: (text) => this.announce(text),
      timeZone: config.time_zone || undefined,
    });
    this.showMeters(config.meters);
    this.thinking = new ThinkingPicker({
      wrapper: document.getElementById("thinking-setting"),
      select: document.getElementById("thinking-picker"),
      models: config.models,
      effort: config.thinking_effort,
      url: config.thinking_url,
      notice: (text) => this.notice(text),
      announce: (text) => this.announce(text),
    });
    this.thinking.setModel(this.model);
    this.webSearch = new WebSearchToggle({
      input: config.web_search_allowed ? document.getElementById("web-search-toggle") : null,
      url: config.web_search_url,
      notice: (text) => this.notice(text),
      announce: (text) => this.announce(text),
    });
    this.modelPicker?.addEventListener("change", () => {
      this.model = this.modelPicker.value;
      this.modelPicker.title = this.model;
      this.thinking.setModel(this.model);
      this.announce(`The next message goes to ${this.modelPicker.selectedOptions[0]?.textContent || this.model}.`);
    });

    // The first page has no conversation: its first message creates one (startConversation).
    this.socket = config.ws_path ? this.makeSocket() : null;
    this.initialWsPath = config.ws_path || null;
    this.creating = false;
    this.bindComposer();
    if (this.socket) {
      this.updateControls();
    } else {
      this.showConnection("new", 0);
      this.input.focus();
    }
  }

  /** Draws the saved messages, then connects (frames apply to the messages shown). Called
   * after the page's first paint: the header, the list and the message box show while the
   * messages render, and the work is two shorter tasks instead of one long one. */
  start() {
    this.list.load(this.config.messages || []);
    setupScrollButton(this.messagesEl, this.scrollButton);
    this.bindOlder(this.messagesEl);
    // The first page's socket is made and started when its first message creates the
    // conversation (becomeConversation), not here.
    if (this.socket && this.config.ws_path === this.initialWsPath) {
      this.updateControls();
      this.socket.start();
    }
  }

  makeSocket() {
    return new ChatSocket(socketUrl(this.config.ws_path), {
      onOpen: () => this.onOpen(),
      onFrame: (frame) => this.onFrame(frame),
      onState: (state, delay) => this.showConnection(state, delay),
    });
  }

  /**
   * The first message of the first page: create the conversation with the model, thinking and
   * web search chosen here, become its page (/c/<id>/), and send over its socket (onOpen sends
   * the pending message). Nothing is stored before there is a message to store.
   */
  async startConversation() {
    if (this.creating) return;
    this.creating = true;
    this.updateControls();
    const choices = {};
    if (this.model) choices.model = this.model;
    if (this.thinking.effort) choices.effort = this.thinking.effort;
    if (this.webSearch.available) choices.web_search = this.webSearch.enabled ? "1" : "0";
    try {
      this.becomeConversation(await postJson(this.config.create_url, choices));
    } catch (error) {
      this.pending = null;
      this.notice(`The conversation could not be started: ${error.message}`);
    } finally {
      this.creating = false;
      this.updateControls();
    }
  }

  becomeConversation(created) {
    Object.assign(this.config, {
      conversation_id: created.id,
      ws_path: created.ws_path,
      messages_url: created.messages_url,
      thinking_url: created.thinking_url,
      web_search_url: created.web_search_url,
      create_url: null,
    });
    const configNode = document.getElementById("chat-config");
    if (configNode) configNode.textContent = JSON.stringify(this.config);
    this.thinking.url = created.thinking_url;
    this.webSearch.url = created.web_search_url;
    history.replaceState(null, "", created.url);
    showConversationActions(created);
    this.socket = this.makeSocket();
    this.socket.start();
  }

  // --- composer -------------------------------------------------------------------------------

  bindComposer() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      if (event.ctrlKey || event.altKey || event.metaKey) return;
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("input", () => {
      // An edited draft is a new message; an unsent one is dropped from the queue.
      if (this.pending && !this.pending.transmitted && this.input.value !== this.pending.raw) {
        this.pending = null;
        this.updateControls();
      }
      if (this.noticeEl.dataset.kind === "too-long" && characterCount(this.input.value) <= this.maxChars) {
        this.notice("");
      }
    });
    autoGrow(this.input);
    this.stopButton.addEventListener("click", () => this.stop());
    this.reconnectButton?.addEventListener("click", () => this.socket.reconnectNow());
  }

  async submit() {
    // A thinking setting being saved applies to this message: wait for it.
    await this.thinking.settled();
    await this.webSearch.settled();
    const raw = this.input.value;
    const text = normaliseText(raw);
    if (!text.trim()) return;
    const length = characterCount(text);
    if (length > this.maxChars) {
      this.notice(
        `Your message is ${length.toLocaleString()} characters; the limit is ` +
          `${this.maxChars.toLocaleString()}. Shorten it and send again.`,
        "too-long",
      );
      return;
    }
    if (this.list.streaming) {
      this.notice("A reply is still being written. Wait for it to finish, or press Stop.");
      return;
    }
    if (this.attachments.hasUploadsInFlight()) {
      // Enter while files upload: the message goes as soon as they are ready.
      this.sendWhenUploaded = true;
      this.notice("Your message will be sent when the attachments have uploaded.", "waiting-uploads");
      return;
    }
    const attachments = this.attachments.pendingAttachmentIds();
    // Sending the same draft again reuses its client_id, so the server starts at most one reply.
    if (!this.pending || this.pending.raw !== raw || this.pending.attachments.join() !== attachments.join()) {
      this.pending = { clientId: newClientId(), raw, text, attachments, transmitted: false };
    }
    this.notice("");
    if (!this.socket) {
      this.startConversation();
      return;
    }
    this.transmitPending();
  }

  /** A send asked for during uploads goes once they are all ready; not when one failed. */
  sendAfterUploads() {
    if (!this.sendWhenUploaded || this.attachments.hasUploadsInFlight()) return;
    this.sendWhenUploaded = false;
    if (this.attachments.hasFailed()) {
      this.notice("An attachment could not be uploaded. Remove it, then send again.");
      return;
    }
    this.submit();
  }

  transmitPending() {
    const p = this.pending;
    if (!p) return;
    const frame = { type: "send", client_id: p.clientId, text: p.text, attachments: p.attachments };
    if (this.model) frame.model = this.model;
    if (this.thinking.effort) frame.effort = this.thinking.effort;
    if (this.webSearch.available) frame.web_search = this.webSearch.enabled;
    if (this.socket.send(frame)) {
      p.transmitted = true;
    } else if (this.connectionState === "not_found") {
      this.pending = null;
    } else {
      this.notice("Not connected. Your message is kept and will be sent when the connection is back.");
    }
    this.updateControls();
  }

  /** The ack of our send: clear the composer unless it has been edited since. */
  acknowledge(clientId) {
    if (!this.pending || this.pending.clientId !== clientId) return;
    if (this.input.value === this.pending.raw) {
      this.input.value = "";
      this.input.dispatchEvent(new Event("input"));
    }
    this.attachments.clearAttachments(this.pending.attachments);
    this.pending = null;
    this.showInList();
    this.list.scrollToBottom();
    this.notice("");
    this.updateControls();
  }

  /** A conversation's first message puts it in the list (which leaves empty ones out). */
  showInList() {
    if (this.listChecked) return;
    this.listChecked = true;
    const id = CSS.escape(String(this.config.conversation_id));
    if (!document.querySelector(`.conversation-item[data-conversation-id="${id}"]`)) refreshList();
  }

  stop() {
    if (this.socket?.send({ type: "stop" })) {
      this.stopping = true;
      this.updateControls();
    } else {
      this.notice("Not connected; the reply cannot be stopped until the connection is back.");
    }
  }

  notice(text, kind = "") {
    this.noticeEl.textContent = text;
    this.noticeEl.hidden = !text;
    this.noticeEl.dataset.kind = text ? kind || "info" : "";
  }

  updateControls() {
    const streaming = Boolean(this.list.streaming);
    if (!streaming) this.stopping = false;
    this.stopButton.hidden = !streaming;
    this.stopButton.disabled = this.stopping;
    this.stopButton.textContent = this.stopping ? "Stopping…" : "Stop";
    this.sendButton.disabled =
      streaming || this.creating || this.connectionState === "not_found"
      || Boolean(this.attachments?.hasUploadsInFlight());
    this.sendButton.textContent = this.pending?.transmitted || this.creating ? "Sending…" : "Send";
    this.input.disabled = this.connectionState === "not_found";
  }

  showConnection(state, delayMs) {
    this.connectionState = state;
    const labels = {
      connecting: "Connecting…",
      open: "Connected",
      reconnecting: delayMs > 0 ? `Reconnecting… (next try in ${Math.ceil(delayMs / 1000)} s)` : "Reconnecting…",
      unauthorized: "Signed out — taking you to the login page…",
      not_found: "Conversation not found",
    };
    this.statusEl.textContent = labels[state] || state;
    this.statusEl.dataset.state = state;
    this.statusEl.hidden = state === "new"; // no connection before the first message
    if (this.reconnectButton) this.reconnectButton.hidden = !(state === "reconnecting" && delayMs > 0);
    if (state === "unauthorized") {
      const next = encodeURIComponent(location.pathname + location.search);
      location.assign(`${this.loginUrl}?next=${next}`);
    } else if (state === "not_found") {
      this.notice("Conversation not found. It may have been deleted.");
    }
    this.updateControls();
  }

  // --- protocol -------------------------------------------------------------------------------

  onOpen() {
    const streaming = this.list.streaming;
    this.socket.send({ type: "resume", after_seq: streaming ? streaming.lastSeq : 0 });
    // Unacknowledged send: repeat it with the same client_id (the server dedupes).
    if (this.pending) this.transmitPending();
    if (this.noticeEl.textContent.startsWith("Not connected")) this.notice("");
  }

  onFrame(frame) {
    const handler = {
      message: this.onMessage,
      start: this.onStart,
      delta: this.onDelta,
      done: this.onDone,
      error: this.onError,
      thinking: this.onThinking,
      tool: this.onTool,
      history: this.onHistory,
      title: this.onTitle,
      notice: this.onNotice,
    }[frame.type];
    if (handler) handler.call(this, frame);
    if (frame.type !== "delta") this.list.refreshActions();
    this.updateControls();
  }

  // --- message actions: continue, regenerate, edit, switch versions ------------------------------

  onAction(action, m, target) {
    if (action === "feedback") {
      this.sendFeedback(m, target);
      return;
    }
    if (this.list.streaming) {
      this.notice("A reply is still being written. Wait for it to finish, or press Stop.");
      return;
    }
    const sent = (frame) => {
      if (this.socket.send(frame)) return true;
      this.notice("Not connected. Try again when the connection is back.");
      return false;
    };
    if (action === "continue") sent({ type: "continue" });
    else if (action === "regenerate") sent({ type: "regenerate" });
    else if (action === "retry") sent({ type: "retry", message_id: m.id });
    else if (action === "switch") sent({ type: "switch", message_id: Number(target) });
    else if (action === "edit") {
      this.list.startEdit(m, (text) => {
        if (characterCount(text) > this.maxChars) {
          this.notice(`The limit is ${this.maxChars.toLocaleString()} characters.`, "too-long");
          return false;
        }
        return sent({ type: "edit", message_id: m.id, text, client_id: newClientId() });
      });
    }
  }

  /** A thumb up or down (rating "" takes it back) and its comment, saved for this reply. */
  async sendFeedback(m, { rating, comment }) {
    if (!this.config.messages_url) return;
    try {
      const saved = await postJson(`${this.config.messages_url}${m.id}/feedback/`, { rating, comment });
      this.list.setFeedback(m, saved.feedback);
      if (comment) this.notice("Thanks for the feedback.");
    } catch (error) {
      this.notice(`The rating was not saved: ${error.message}`, "feedback");
    }
  }

  onHistory(frame) {
    if (!Array.isArray(frame.messages)) return;
    this.list.replaceAfter(frame.from_parent_id ?? null, frame.messages);
  }

  onNotice(frame) {
    // model_replaced: the conversation's model left the catalogue; the server moved it.
    if (typeof frame.message === "string" && frame.message) this.notice(frame.message);
    if (frame.code === "model_replaced" && typeof frame.model === "string") {
      this.model = frame.model;
      this.thinking.setModel(frame.model);
      if (this.modelPicker) this.modelPicker.value = frame.model;
      if (this.modelPicker) this.modelPicker.title = frame.model;
      document.querySelector('[data-testid="model-unavailable"]')?.remove();
    }
  }

  onTitle(frame) {
    if (typeof frame.title !== "string" || !frame.title) return;
    const heading = document.getElementById("conversation-title");
    if (heading) heading.textContent = frame.title;
    document.title = `${frame.title} · claudeweb`;
    const id = String(frame.conversation_id ?? this.config.conversation_id);
    const item = document.querySelector(`.conversation-item[data-conversation-id="${CSS.escape(id)}"]`);
    const label = item?.querySelector(".conversation-title");
    if (label) label.textContent = frame.title;
    if (item) item.dataset.title = frame.title;
  }

  // --- meters: context window, budget, cache hits -----------------------------------------------

  showMeters(meters) {
    if (!meters || typeof meters !== "object") return;
    const gauge = document.getElementById("context-gauge");
    const contextText = document.getElementById("context-text");
    const budgetText = document.getElementById("budget-text");
    const cacheText = document.getElementById("cache-text");
    const used = Number(meters.context_tokens || 0);
    const window_ = Number(meters.context_window || 0);
    if (gauge && window_ > 0) {
      gauge.max = window_;
      gauge.value = Math.min(used, window_);
      gauge.low = window_ * 0.6;
      gauge.high = window_ * 0.85;
      gauge.optimum = 0;
    }
    if (contextText) {
      const pct = window_ ? Math.round((100 * used) / window_) : 0;
      contextText.textContent = `${compact(used)} / ${compact(window_)} (${pct}%)`;
    }
    if (budgetText) {
      // The server words it ("$4.37 of $5.00 left today"), rounded so it never overstates.
      const budget = meters.budget && typeof meters.budget === "object" ? meters.budget : null;
      budgetText.textContent = budget && typeof budget.text === "string" ? budget.text : "No limit";
      budgetText.dataset.low = String(Boolean(budget && budget.low));
    }
    if (cacheText) {
      const ratio = meters.cache_hit_ratio;
      cacheText.textContent = ratio === null || ratio === undefined ? "–" : `${Math.round(ratio * 100)}%`;
    }
  }

  announce(text) {
    if (!this.announcer || !text) return;
    this.announcer.textContent = text.length > 600 ? `${text.slice(0, 600)}…` : text;
  }

  // --- older messages load on scroll ----------------------------------------------------------

  bindOlder(container) {
    if (!this.olderEl || !this.config.messages_url) return;
    this.olderEl.hidden = !this.hasMore;
    const observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadOlder();
    }, { root: container, rootMargin: "200px 0px 0px 0px" });
    observer.observe(this.olderEl);
  }

  async loadOlder() {
    if (!this.hasMore || this.loadingOlder) return;
    const first = this.list.ids()[0];
    if (!first) return;
    this.loadingOlder = true;
    try {
      const response = await fetch(`${this.config.messages_url}?before=${first}`, {
        headers: { Accept: "application/json" }, credentials: "same-origin",
      });
      if (!response.ok) throw new Error(String(response.status));
      const page = await response.json();
      this.list.prepend(page.messages || []);
      this.hasMore = Boolean(page.has_more);
      this.olderEl.hidden = !this.hasMore;
    } catch {
      this.olderEl.textContent = "Earlier messages could not be loaded. Scroll up to try again.";
    } finally {
      this.loadingOlder = false;
    }
  }

  onMessage(frame) {
    if (!frame.message || frame.message.id === undefined) return;
    const known = this.list.get(frame.message.id);
    if (known && frame.message.status !== "streaming") {
      clearTimeout(known.doneTimer);
      known.pendingDone = null;
    }
    this.list.upsertSaved(frame.message);
    if (frame.client_id) this.acknowledge(frame.client_id);
  }

  onStart(frame) {
    const existing = this.list.get(frame.message_id);
    const m = this.list.ensureStreaming(frame.message_id);
    if (frame.model) m.model = frame.model;
    if (existing && (existing.status !== "streaming" || frame.continuation)) {
      // The same message continues (`continue`): deltas append to its text and number on
      // from its last seq.
      m.baseText = m.text;
      m.status = "streaming";
      m.stopReason = "";
      m.maxSeenSeq = m.lastSeq;
      m.usage = null;
      m.cost = null;
      m.note = "";
      this.list.renderStatus(m);
    }
  }

  onDelta(frame) {
    const seq = Number(frame.seq);
    if (!Number.isInteger(seq) || seq < 1) return;
    const m = this.list.ensureStreaming(frame.message_id);
    if (m.status !== "streaming") return; // finished: its saved text is the truth
    m.maxSeenSeq = Math.max(m.maxSeenSeq, seq);
    if (seq <= m.lastSeq) return; // already applied (live and replayed)
    if (seq !== m.lastSeq + 1) {
      this.requestGapFill(m);
      return;
    }
    // Seq 1 starts the reply's text afresh: it replaces a checkpoint loaded with the page.
    m.text = (seq === 1 ? m.baseText : m.text) + (frame.text || "");
    m.lastSeq = seq;
    m.seqLength.set(seq, m.text.length); // where a tool step after this delta goes
    this.list.endThinking(m);
    this.list.scheduleBody(m);
    if (m.pendingDone && m.lastSeq >= m.maxSeenSeq) this.onDone(m.pendingDone);
  }

  requestGapFill(m) {
    if (this.gapTimer) return;
    const seqAtGap = m.lastSeq;
    this.gapTimer = setTimeout(() => {
      this.gapTimer = null;
      if (m.status === "streaming" && m.lastSeq === seqAtGap) {
        this.socket.send({ type: "resume", after_seq: m.lastSeq });
      }
    }, GAP_RESUME_DELAY_MS);
  }

  onDone(frame) {
    let m = this.list.get(frame.message_id);
    if (!m) {
      // A reply we saw none of: ask for its text (replayed deltas and `done`, or the saved
      // message); the replayed `done` or the grace period finishes it.
      m = this.list.ensureStreaming(frame.message_id);
      this.socket.send({ type: "resume", after_seq: 0 });
      m.doneTimer = setTimeout(() => this.finish(m, frame, ""), DONE_GAP_GRACE_MS);
      return;
    }
    if (m.status === "streaming" && m.maxSeenSeq > m.lastSeq && !m.pendingDone) {
      // Deltas are missing: ask for them and finish when they arrive, or after a grace period.
      m.pendingDone = frame;
      this.socket.send({ type: "resume", after_seq: m.lastSeq });
      const note = "Some of this reply may be missing; reload to see all of it.";
      m.doneTimer = setTimeout(() => this.finish(m, frame, note), DONE_GAP_GRACE_MS);
      return;
    }
    this.finish(m, frame, "");
  }

  finish(m, frame, note) {
    clearTimeout(m.doneTimer);
    m.pendingDone = null;
    if (m.status === "streaming") m.status = "done";
    m.stopReason = frame.stop_reason || m.stopReason || "";
    m.usage = frame.usage || m.usage;
    m.cost = frame.cost ?? m.cost;
    m.note = note;
    if (!m.createdAt) m.createdAt = new Date().toISOString();
    this.list.endThinking(m);
    // The saved blocks (tool steps, thinking, citations) come with `done`; a server without
    // them leaves the saved message to be read.
    const saved = Array.isArray(frame.content);
    if (saved) this.list.applyContent(m, frame.content);
    this.list.renderFinished(m);
    if (!saved) this.refreshSavedExtras(m);
    this.announce(`${this.list.assistantName} finished replying.`);
    this.showMeters(frame.meters);
    this.list.refreshActions();
    this.updateControls();
  }

  onError(frame) {
    const text = frame.message || "Something went wrong.";
    const m = frame.message_id !== null && frame.message_id !== undefined ? this.list.get(frame.message_id) : null;
    if (m) {
      // Text streamed before the error stays.
      clearTimeout(m.doneTimer);
      m.pendingDone = null;
      m.status = "error";
      m.errorCode = frame.code || "";
      m.errorMessage = text;
      m.retryable = Boolean(frame.retryable);
      this.list.endThinking(m);
      this.list.renderAll(m, { final: true });
      this.refreshSavedExtras(m);
      return;
    }
    // Not about a reply we show: our last send (or stop) was refused. The draft stays in the
    // composer, and sending it again makes a new attempt.
    if (!frame.message_id) this.pending = null;
    this.notice(frame.retryable ? withRetryHint(text) : text, frame.code || "error");
  }

  onThinking(frame) {
    const m = this.list.ensureStreaming(frame.message_id);
    if (m.status !== "streaming" || typeof frame.text !== "string") return;
    this.list.addThinking(m, frame.text);
  }

  /**
   * Thinking and tool steps of a finished reply, from its saved message: `thinking` frames carry
   * no seq, so a tab that joined mid-reply missed some, and redacted thinking never streams.
   * The newest message of the branch is read (one small request); the text is left alone.
   */
  async refreshSavedExtras(m) {
    if (!this.config.messages_url || m.role !== "assistant") return;
    try {
      const response = await fetch(`${this.config.messages_url}?limit=1`, {
        headers: { Accept: "application/json" }, credentials: "same-origin",
      });
      if (!response.ok) return;
      const saved = (await response.json()).messages?.[0];
      if (!saved || saved.id !== m.id || saved.status === "streaming") return;
      this.list.applyContent(m, saved.content);
      this.list.renderAll(m, { final: true });
    } catch {
      // Offline: what streamed stays shown; a reload shows the saved thinking.
    }
  }

  onTool(frame) {
    const m = this.list.ensureStreaming(frame.message_id);
    this.list.toolStep(m, frame);
  }
}

/** The header's actions (export, rename, delete) of a conversation the first page created. */
function showConversationActions(created) {
  const actions = document.querySelector('[data-testid="chat-actions"]');
  if (!actions) return;
  actions.querySelector('[data-testid="export-md"]')?.setAttribute("href", created.export_md_url);
  actions.querySelector('[data-testid="export-json"]')?.setAttribute("href", created.export_json_url);
  actions.querySelector('[data-testid="rename-form"]')?.setAttribute("action", created.rename_url);
  actions.querySelector('[data-testid="delete-form"]')?.setAttribute("action", created.trash_url);
  actions.hidden = false;
  document.querySelector('[data-testid="meters"]')?.removeAttribute("hidden");
}

function compact(n) {
  const value = Number(n || 0);
  if (value >= 1_000_000) return `${(value / 1_000_000).toFixed(value >= 10_000_000 ? 0 : 1)}M`;
  if (value >= 1_000) return `${(value / 1_000).toFixed(value >= 10_000 ? 0 : 1)}k`;
  return String(value);
}

applyTheme();
setupConfirmForms();
setupMenus();
setupSidebarToggle();
setupSidebar();
setupSearch();
setupImport();
const config = readConfig();
setupUndoToast(Number(config?.undo_seconds) || 0);
const root = document.getElementById("chat");
let chatPage = null;
setupShortcuts({
  stop: () => {
    if (!chatPage?.list.streaming) return false;
    chatPage.stop();
    return true;
  },
});
if (root && config && (config.ws_path || config.create_url)) {
  chatPage = new ChatPage(root, config);
  // Replies with formulas wait for KaTeX (fetched only for them) rather than show their source
  // and then change under the reader's eyes.
  const replies = (config.messages || []).filter((m) => m.role === "assistant");
  const math = replies.some((m) => mayHaveMath(m.text)) ? loadMath().catch(() => {}) : null;
  // Messages the server did not draw are rendered here: marked and DOMPurify first. A page it
  // drew fetches them once the reader starts doing something (or a render needs them).
  const drawn = Boolean(document.querySelector("article[data-drawn]"));
  const renderer = replies.length && !drawn ? loadRenderer().catch(() => {}) : null;
  for (const type of ["focusin", "pointerdown", "keydown"]) {
    document.addEventListener(type, () => loadRenderer().catch(() => {}), { once: true, capture: true });
  }
  await Promise.all([afterFirstPaint(), math, renderer]);
  chatPage.start();
}
