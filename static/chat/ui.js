// Page furniture shared by the chat pages: the conversation list's actions (rename inline, pin,
// archive, delete with undo), keyboard shortcuts with their help dialog, the theme, and the
// auto-growing composer. Every action is a plain form post first; this only makes it smoother.

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
export function applyTheme() {
  const theme = document.documentElement.dataset.theme;
  if (theme !== "light" && theme !== "dark") return;
  for (const link of document.querySelectorAll('link[href*="highlight/styles/"]')) {
    const dark = link.href.includes("github-dark");
    link.media = dark === (theme === "dark") ? "all" : "not all";
  }
}

export function autoGrow(textarea) {
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
    // The open conversation is gone: show the empty page, keeping the undo for a moment.
    document.getElementById("chat")?.setAttribute("hidden", "");
    history.replaceState(null, "", "/");
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
