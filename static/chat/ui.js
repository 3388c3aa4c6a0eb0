// Page furniture shared by the chat pages: the conversation list's actions (rename inline, pin,
// archive, delete with undo), search in place, menus, import, keyboard shortcuts with their help
// dialog, the theme, and the auto-growing composer. Every action is a plain form post or link
// first; this only makes it smoother.

const COMPOSER_MAX_PX = 320;

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]')?.content
    || document.querySelector('input[name="csrfmiddlewaretoken"]')?.value || "";
}

/** POSTs form data and returns the JSON answer; throws with the server's message on failure. */
export async function postJson(url, data = {}) {
  // URL-encoded: an empty multipart body is refused by the server's parser.
  const body = new URLSearchParams();
  for (const [key, value] of Object.entries(data)) body.append(key, value);
  const response = await fetch(url, {
    method: "POST",
    body,
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
  });
  let payload = {};
  try {
    payload = await response.json();
  } catch {
    // not JSON: a login redirect or a server error page
  }
  if (!response.ok) throw new Error(payload.error || `The server answered ${response.status}.`);
  return payload;
}

/** The stylesheets of code highlighting follow the chosen theme, not only the system's. */
/** The code colours of the chosen theme; "system" follows the device (each link's data-media). */
export function applyTheme() {
  const theme = document.documentElement.dataset.theme;
  for (const link of document.querySelectorAll('link[href*="highlight/styles/"]')) {
    const dark = link.href.includes("github-dark");
    if (theme === "light" || theme === "dark") link.media = dark === (theme === "dark") ? "all" : "not all";
    else if (link.dataset.media) link.media = link.dataset.media;
  }
}

/** The message box grows with its text: by CSS where the browser has `field-sizing` (chat.css),
 * else here, on each input. */
export function autoGrow(textarea) {
  if (CSS.supports("field-sizing", "content")) return;
  const fit = () => {
    textarea.style.height = "auto";
    textarea.style.height = `${Math.min(textarea.scrollHeight + 2, COMPOSER_MAX_PX)}px`;
  };
  textarea.addEventListener("input", fit);
  fit();
}

let toastTimer = null;

/** A short message at the bottom of the list, with an optional action button. */
function toast(text, action) {
  const box = document.getElementById("toast");
  if (!box) return;
  clearTimeout(toastTimer);
  const nodes = [document.createTextNode(text)];
  if (action) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button button-small";
    button.textContent = action.label;
    button.dataset.testid = action.testid || "toast-action";
    button.addEventListener("click", action.run, { once: true });
    nodes.push(button);
  }
  box.replaceChildren(...nodes);
  box.hidden = false;
  toastTimer = setTimeout(() => {
    box.hidden = true;
  }, (action?.seconds || 6) * 1000);
}

function currentConversationId() {
  const config = document.getElementById("chat-config");
  try {
    return JSON.parse(config?.textContent || "{}").conversation_id ?? null;
  } catch {
    return null;
  }
}

async function trash(form, item) {
  const id = Number(item.dataset.conversationId);
  const answer = await postJson(form.action, Object.fromEntries(new FormData(form)));
  const placeholder = document.createComment("deleted");
  item.replaceWith(placeholder);
  const title = item.querySelector(".conversation-title")?.textContent || "Conversation";
  const leaving = currentConversationId() === id;
  toast(`Deleted “${title}”.`, {
    label: "Undo",
    testid: "undo-delete",
    seconds: answer.undo_seconds || 10,
    run: async () => {
      try {
        await postJson(answer.undo_url);
        placeholder.replaceWith(item);
        toast("Restored.");
        if (leaving) location.reload();
      } catch (error) {
        toast(error.message);
      }
    },
  });
  if (leaving) {
    // The open conversation is gone: the first page, which offers the undo as a toast.
    location.assign(`/?undo=${id}`);
  }
}

function startRename(item, url) {
  const link = item.querySelector(".conversation-link");
  const label = item.querySelector(".conversation-title");
  if (!link || !label || item.querySelector(".rename-inline")) return;
  const form = document.createElement("form");
  form.className = "rename-inline";
  const input = document.createElement("input");
  input.type = "text";
  input.maxLength = 200;
  input.value = item.dataset.title || "";
  input.placeholder = label.textContent;
  input.setAttribute("aria-label", "New title");
  input.dataset.testid = "rename-inline-input";
  form.append(input);
  link.hidden = true;
  link.after(form);
  input.focus();
  input.select();
  let done = false;
  const close = () => {
    done = true;
    form.remove();
    link.hidden = false;
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (done) return;
    try {
      const answer = await postJson(url, { title: input.value });
      label.textContent = answer.title;
      item.dataset.title = input.value.trim();
      if (Number(item.dataset.conversationId) === currentConversationId()) {
        const heading = document.getElementById("conversation-title");
        if (heading) heading.textContent = answer.title;
        document.title = `${answer.title} · claudeweb`;
      }
      close();
      link.focus();
    } catch (error) {
      toast(error.message);
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
      link.focus();
    }
  });
  input.addEventListener("blur", () => {
    if (!done) form.requestSubmit();
  });
}

export function setupSidebar() {
  const sidebar = document.getElementById("sidebar");
  if (!sidebar) return;
  sidebar.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action='rename']");
    if (!button) return;
    const item = button.closest(".conversation-item");
    button.closest("details")?.removeAttribute("open");
    startRename(item, button.dataset.url);
  });
  sidebar.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-ajax]");
    if (!form) return;
    event.preventDefault();
    const item = form.closest(".conversation-item");
    form.closest("details")?.removeAttribute("open");
    try {
      if (form.dataset.ajax === "trash") {
        await trash(form, item);
      } else {
        // Pin and archive move the conversation between groups: show the list as the server
        // orders it.
        await postJson(form.action, Object.fromEntries(new FormData(form)));
        location.reload();
      }
    } catch (error) {
      toast(error.message);
    }
  });
}

function typing(target) {
  return target instanceof HTMLElement
    && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

/** Keyboard shortcuts, listed in the help dialog (`?`). */
export function setupShortcuts({ stop }) {
  const help = document.getElementById("help-dialog");
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.isComposing) return;
    if (event.altKey && !event.ctrlKey && !event.metaKey) {
      const key = event.key.toLowerCase();
      if (key === "n" || event.code === "KeyN") {
        event.preventDefault();
        document.querySelector('[data-testid="new-chat"]')?.click();
      } else if (key === "k" || event.code === "KeyK") {
        event.preventDefault();
        document.getElementById("composer-input")?.focus();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey) return;
    if (event.key === "Escape") {
      if (help?.open || document.body.classList.contains("sidebar-open")) return;
      if (stop()) event.preventDefault();
      return;
    }
    if (typing(event.target)) return;
    if (event.key === "?") {
      event.preventDefault();
      help?.showModal();
    } else if (event.key === "/") {
      const search = document.getElementById("search-input");
      if (!search) return;
      event.preventDefault();
      document.body.classList.add("sidebar-open");
      document.querySelector("[data-sidebar-toggle]")?.setAttribute("aria-expanded", "true");
      search.focus();
    }
  });
}

// --- the list in place: search and paging without leaving the open conversation -------------------

const SEARCH_DELAY_MS = 250; // typing pauses this long before the list asks the server
let listParams = new URLSearchParams();
let listRequest = null;

/**
 * Show the list for `params` (q, archived, page) from chat:list, the conversation on screen
 * marked. The answer is the server's own template, escaped there; it is parsed inertly and
 * moved in, so nothing in it runs.
 */
export async function refreshList(params = listParams) {
  const region = document.getElementById("conversation-list");
  if (!region) return;
  listParams = new URLSearchParams(params);
  const query = new URLSearchParams(listParams);
  const current = currentConversationId();
  if (current !== null) query.set("current", String(current));
  listRequest?.abort();
  const request = new AbortController();
  listRequest = request;
  try {
    const response = await fetch(`${region.dataset.listUrl}?${query}`, {
      credentials: "same-origin", signal: request.signal,
    });
    if (!response.ok) throw new Error(`The server answered ${response.status}.`);
    const html = await response.text();
    if (listRequest !== request) return; // a newer search is on its way
    const parsed = new DOMParser().parseFromString(html, "text/html");
    region.replaceChildren(...parsed.body.childNodes);
  } catch (error) {
    if (error.name !== "AbortError") toast(`The list could not be loaded: ${error.message}`);
  }
}

export function setupSearch() {
  const form = document.querySelector('[data-testid="search-form"]');
  const input = document.getElementById("search-input");
  const region = document.getElementById("conversation-list");
  if (!form || !input || !region) return;
  let timer = null;
  const search = () => {
    clearTimeout(timer);
    const q = input.value.trim();
    refreshList(q ? new URLSearchParams({ q }) : new URLSearchParams());
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, SEARCH_DELAY_MS);
  });
  // Clear, Archived, Back and the page links change the list, not the page.
  region.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-list-link]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    const params = new URL(link.href).searchParams;
    params.delete("current");
    if (!params.get("q")) input.value = "";
    refreshList(params);
  });
}

// --- menus: the list's ⋯ and the header's Export close on Esc and on a click outside ----------------

const MENUS = "details.item-menu[open], details.export-menu[open]";

export function setupMenus() {
  // Capture: the menu closes before the page's own Esc (stop a reply, close the drawer) runs.
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    const open = document.querySelector(MENUS);
    if (!open) return;
    event.preventDefault();
    event.stopPropagation();
    open.removeAttribute("open");
    open.querySelector("summary")?.focus();
  }, true);
  document.addEventListener("click", (event) => {
    for (const menu of document.querySelectorAll(MENUS)) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    }
  });
}

// --- import: a button that opens the file picker; a file chosen is imported at once --------------

export function setupImport() {
  const form = document.querySelector('[data-testid="import-form"]');
  const input = document.getElementById("import-file");
  const error = document.getElementById("import-error");
  const label = form?.querySelector(".import-button");
  if (!form || !input || !error || !label) return;
  const idle = label.textContent;
  const fail = (text) => {
    error.textContent = `Import failed: ${text}`;
    error.hidden = false;
  };
  input.addEventListener("change", async () => {
    const file = input.files?.[0];
    if (!file) return;
    error.hidden = true;
    label.textContent = "Importing…";
    try {
      const body = new FormData(form);
      const response = await fetch(form.action, {
        method: "POST", body, credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      });
      let answer = {};
      try {
        answer = await response.json();
      } catch {
        // not JSON: a login redirect or a server error page
      }
      if (!response.ok || !answer.url) {
        fail(answer.error || `the server answered ${response.status}.`);
        return;
      }
      location.assign(answer.url);
    } catch {
      fail("the server could not be reached. Try again.");
    } finally {
      label.textContent = idle;
      input.value = ""; // the same file may be chosen again after a fix
    }
  });
}

/** The undo of a delete the server rendered (a page load after Delete) lasts as long as undo does. */
export function setupUndoToast(seconds) {
  const form = document.querySelector('[data-testid="undo-form"]');
  if (form && seconds > 0) setTimeout(() => form.remove(), seconds * 1000);
}
