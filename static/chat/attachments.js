// Images and documents attached to the message being written (docs/images.md, docs/documents.md):
// picked with the button, dropped on the composer or pasted (images); images shrunk in the browser
// when large; posted straight to S3 with the presigned POST the server signs (progress shown,
// cancellable); then verified by the server. Only verified files are sent, by id, with the message.

const API = "/attachments/";
const LOSSY_QUALITY = 0.9;
const IN_FLIGHT = new Set(["preparing", "uploading", "verifying"]);
// A finish answered 503 `busy` (the server's image checks are all taken) is sent again after
// its Retry-After, this many times; the upload stays pending on the server meanwhile.
const BUSY_RETRIES = 5;

/** The CSRF token for scripts: the page's meta tag, else Django's cookie. */
export function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

async function api(method, url, body) {
  const headers = { "X-CSRFToken": csrfToken() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const error = new Error(data?.error?.message || `The server answered ${response.status}.`);
    error.code = data?.error?.code || "";
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw error;
  }
  return data;
}

/** Finish an upload, waiting and asking again while the server answers `busy`. */
async function finishUpload(item) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await api("POST", `${API}${item.id}/finish/`);
    } catch (error) {
      if (error.code !== "busy" || attempt >= BUSY_RETRIES || item.cancelled) throw error;
      item.caption.textContent = "Waiting for the server…";
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, error.retryAfter) * 1000));
      if (item.cancelled) throw error;
    }
  }
}

/** Width and height scaled so the long edge is at most `edge`; never enlarged. */
export function fitWithin(width, height, edge) {
  const scale = Math.min(1, edge / Math.max(width, height));
  return {
    width: Math.max(1, Math.round(width * scale)),
    height: Math.max(1, Math.round(height * scale)),
    scaled: scale < 1,
  };
}

/** Claude's estimate of an image's input tokens: width × height / 750. */
export function tokenEstimate(width, height) {
  return Math.ceil((width * height) / 750);
}

// A file the system gives no type (a Markdown file often) is known by its name's ending.
const DOCUMENT_EXTENSIONS = { pdf: "application/pdf", txt: "text/plain", md: "text/markdown", markdown: "text/markdown" };
const DOCUMENT_LABELS = { "application/pdf": "PDF", "text/plain": "TXT", "text/markdown": "MD" };

/** The type a file is uploaded as, or "" when it is neither an image nor a document we take. */
export function uploadType(file, limits) {
  const images = limits.content_types || [];
  const documents = limits.document_types || [];
  if (images.includes(file.type) || documents.includes(file.type)) return file.type;
  const ending = (file.name || "").toLowerCase().match(/\.([a-z]+)$/)?.[1] || "";
  const guess = DOCUMENT_EXTENSIONS[ending] || "";
  // A typed file of another type (text/html named .txt) is what it says it is.
  return documents.includes(guess) && (!file.type || file.type === "application/octet-stream") ? guess : "";
}

/** "18k" for a token count, "1.5k", "840". */
export function compactTokens(n) {
  if (n < 1000) return String(n);
  return n < 10_000 ? `${(n / 1000).toFixed(1).replace(/\.0$/, "")}k` : `${Math.round(n / 1000)}k`;
}

function sizeText(bytes) {
  return bytes < 1024 * 1024 ? `${Math.max(1, Math.round(bytes / 1024))} KB` : `${(bytes / 1048576).toFixed(1)} MB`;
}

/** The blob to upload: the file itself, or a canvas copy when its long edge is above the limit. */
async function prepare(file, longEdgePx) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file); // applies the EXIF orientation
  } catch {
    throw new Error("This file cannot be read as an image.");
  }
  try {
    const size = fitWithin(bitmap.width, bitmap.height, longEdgePx);
    const original = { width: bitmap.width, height: bitmap.height };
    if (!size.scaled) return { blob: file, width: bitmap.width, height: bitmap.height, original };
    const canvas = document.createElement("canvas");
    canvas.width = size.width;
    canvas.height = size.height;
    const context = canvas.getContext("2d");
    context.imageSmoothingQuality = "high";
    context.drawImage(bitmap, 0, 0, size.width, size.height);
    // A canvas cannot write GIF: a shrunk GIF (its first frame) becomes a PNG. A browser that
    // cannot write the type falls back to PNG, which blob.type then says.
    const type = file.type === "image/gif" ? "image/png" : file.type;
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, type, LOSSY_QUALITY));
    if (!blob) throw new Error("This image could not be resized.");
    return { blob, width: size.width, height: size.height, original };
  } finally {
    bitmap.close();
  }
}

/** Posts the blob to the presigned URL: {done: Promise, abort()}; progress as a 0–1 fraction. */
function postToStorage(upload, blob, name, onProgress) {
  const form = new FormData();
  for (const [field, value] of Object.entries(upload.fields)) form.append(field, value);
  form.append("file", blob, name); // S3 wants the file last
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else reject(new Error(`The upload was refused (HTTP ${xhr.status}).`));
    });
    xhr.addEventListener("error", () => reject(new Error("The upload failed: storage could not be reached.")));
    xhr.addEventListener("abort", () => reject(new Error("Cancelled.")));
  });
  xhr.open("POST", upload.url);
  xhr.send(form);
  return { done, abort: () => xhr.abort() };
}

function node(tag, className, testid) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (testid) element.dataset.testid = testid;
  return element;
}

export class AttachmentTray {
  /** root: the chat section. onChange: called when the set or states change. notice(text). */
  constructor(root, { onChange = () => {}, notice = () => {} } = {}) {
    this.preview = root.querySelector("#attachment-preview");
    this.estimateEl = root.querySelector("#token-estimate");
    this.button = root.querySelector("#attach");
    this.input = root.querySelector("#attach-input");
    this.form = root.querySelector("#composer");
    this.textarea = root.querySelector("#composer-input");
    this.onChange = onChange;
    this.notice = notice;
    this.items = [];
    this.limits = null;
    if (!this.preview || !this.input || !this.button) return;
    this.bind();
    this.button.hidden = false;
    // The picker offers what the server takes.
    this.loadLimits()
      .then((limits) => {
        const types = [...(limits.content_types || []), ...(limits.document_types || [])];
        const endings = Object.entries(DOCUMENT_EXTENSIONS)
          .filter(([, type]) => (limits.document_types || []).includes(type))
          .map(([ending]) => `.${ending}`);
        this.input.accept = [...types, ...endings].join(",");
      })
      .catch(() => {}); // tried again when a file is picked
  }

  /** Ids of the verified attachments, in the order they were attached. */
  pendingAttachmentIds() {
    return this.items.filter((item) => item.state === "ready").map((item) => item.id);
  }

  hasFailed() {
    return this.items.some((item) => item.state === "failed");
  }

  hasUploadsInFlight() {
    return this.items.some((item) => IN_FLIGHT.has(item.state));
  }

  /** Forgets the images with these ids (all when none given): they were sent, so they stay stored. */
  clearAttachments(ids = null) {
    const sent = ids ? new Set(ids) : null;
    for (const item of [...this.items]) {
      if (!sent || sent.has(item.id)) this.drop(item);
    }
    this.changed();
  }

  // --- input --------------------------------------------------------------------------------

  bind() {
    this.button.addEventListener("click", () => this.input.click());
    this.input.addEventListener("change", () => {
      const files = [...this.input.files];
      this.input.value = "";
      this.addFiles(files);
    });
    const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
    this.form.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      this.form.classList.add("is-drop-target");
    });
    this.form.addEventListener("dragleave", (event) => {
      if (!this.form.contains(event.relatedTarget)) this.form.classList.remove("is-drop-target");
    });
    this.form.addEventListener("drop", (event) => {
      this.form.classList.remove("is-drop-target");
      if (!hasFiles(event)) return;
      event.preventDefault();
      this.addFiles([...event.dataTransfer.files]);
    });
    this.textarea?.addEventListener("paste", (event) => {
      const data = event.clipboardData;
      const files = [...(data?.files || [])].filter((file) => file.type.startsWith("image/"));
      if (!files.length) return;
      if (!data.types.includes("text/plain")) event.preventDefault();
      this.addFiles(files);
    });
  }

  async loadLimits() {
    if (!this.limits) {
      this.limits = api("GET", `${API}limits/`).catch((error) => {
        this.limits = null;
        throw error;
      });
    }
    return this.limits;
  }

  async addFiles(files) {
    if (!files.length) return;
    let limits;
    try {
      limits = await this.loadLimits();
    } catch (error) {
      this.notice(`Files cannot be attached right now: ${error.message}`);
      return;
    }
    for (const file of files) {
      const kept = this.items.filter((item) => item.state !== "failed").length;
      if (kept >= limits.max_per_message) {
        this.notice(`At most ${limits.max_per_message} files can be sent with one message.`);
        break;
      }
      const type = uploadType(file, limits);
      if (!type) {
        this.notice(
          `${file.name || "That file"} cannot be attached: use a JPEG, PNG, GIF or WebP image, ` +
            "a PDF, or a text or Markdown file.",
        );
        continue;
      }
      if ((limits.document_types || []).includes(type)) this.uploadDocument(file, type, limits);
      else this.upload(file, limits);
    }
  }

  // --- one upload ---------------------------------------------------------------------------

  async upload(file, limits) {
    const item = this.addItem(file);
    try {
      const prepared = await prepare(file, limits.browser_long_edge_px);
      if (item.cancelled) return;
      this.showThumb(item, prepared.blob);
      if (prepared.blob.size > limits.max_bytes) {
        throw new Error(`Too large: ${sizeText(prepared.blob.size)}, the limit is ${sizeText(limits.max_bytes)}.`);
      }
      const result = await this.send(item, prepared.blob, prepared.blob.type || file.type, file.name || "pasted-image");
      if (!result) return;
      item.width = result.width;
      item.height = result.height;
      item.original = prepared.original;
      item.tokens = result.token_estimate ?? tokenEstimate(result.width, result.height);
      this.setState(item, "ready");
    } catch (error) {
      if (!item.cancelled) this.setState(item, "failed", error.message);
    }
  }

  /** A PDF, text or Markdown file: uploaded as it is, then checked by the server. */
  async uploadDocument(file, type, limits) {
    const item = this.addItem(file, type);
    try {
      const limit = type === "application/pdf" ? limits.document_max_bytes : limits.text_document_max_bytes;
      if (limit && file.size > limit) {
        throw new Error(`Too large: ${sizeText(file.size)}, the limit is ${sizeText(limit)}.`);
      }
      const result = await this.send(item, file.slice(0, file.size, type), type, item.name);
      if (!result) return;
      item.pages = Number.isInteger(result.page_count) ? result.page_count : null;
      // Null while the server makes no estimate: then none is shown.
      item.tokens = Number.isFinite(result.token_estimate) ? result.token_estimate : null;
      this.setState(item, "ready");
    } catch (error) {
      if (!item.cancelled) this.setState(item, "failed", error.message);
    }
  }

  /** start → POST to storage → finish; the finish answer, or null when the user removed it. */
  async send(item, blob, contentType, name) {
    const removed = () => {
      this.discard(item);
      return null;
    };
    const start = await api("POST", `${API}start/`, { content_type: contentType, byte_size: blob.size, name });
    item.id = start.id;
    if (item.cancelled) return removed();
    this.setState(item, "uploading");
    item.request = postToStorage(start.upload, blob, name, (f) => this.setProgress(item, f));
    await item.request.done;
    item.request = null;
    this.setProgress(item, 1);
    if (item.cancelled) return removed();
    this.setState(item, "verifying");
    const result = await finishUpload(item);
    if (item.cancelled) return removed();
    return result;
  }

  addItem(file, documentType = "") {
    const item = {
      id: null, name: file.name || (documentType ? "document" : "pasted image"), state: "preparing",
      cancelled: false, document: Boolean(documentType), pages: null, tokens: null,
    };
    item.el = node("figure", `attachment-item${documentType ? " attachment-document" : ""}`, "attachment-item");
    item.el.dataset.kind = documentType ? "document" : "image";
    if (documentType) {
      // No image to show: the kind and the name instead (never a broken image).
      item.thumb = node("span", "attachment-doc-icon", "attachment-doc-icon");
      item.thumb.textContent = DOCUMENT_LABELS[documentType] || "DOC";
      item.thumb.setAttribute("aria-hidden", "true");
    } else {
      item.thumb = node("img", "attachment-thumb", "attachment-thumb");
      item.thumb.alt = item.name;
    }
    item.progress = node("progress", "attachment-progress", "attachment-progress");
    item.progress.max = 100;
    item.progress.value = 0;
    item.progress.setAttribute("aria-label", `Upload of ${item.name}`);
    item.caption = node("figcaption", "attachment-caption");
    const cancel = node("button", "attachment-cancel", "attachment-cancel");
    cancel.type = "button";
    cancel.textContent = "×";
    cancel.setAttribute("aria-label", `Remove ${item.name}`);
    cancel.addEventListener("click", () => this.remove(item));
    item.el.append(item.thumb);
    if (documentType) {
      const name = node("span", "attachment-name", "attachment-name");
      name.textContent = item.name;
      item.el.append(name);
    }
    item.el.append(item.progress, item.caption, cancel);
    this.preview.append(item.el);
    this.items.push(item);
    this.setState(item, "preparing");
    return item;
  }

  showThumb(item, blob) {
    item.blobUrl = URL.createObjectURL(blob);
    item.thumb.addEventListener("error", () => this.placeholderThumb(item), { once: true });
    item.thumb.src = item.blobUrl;
  }

  /** An image that cannot be shown (refused, unreadable) gets its kind, never a broken image. */
  placeholderThumb(item) {
    if (item.thumb.tagName !== "IMG") return;
    const label = node("span", "attachment-doc-icon", "attachment-doc-icon");
    label.textContent = (item.name.match(/\.([a-z0-9]+)$/i)?.[1] || "image").toUpperCase().slice(0, 5);
    label.setAttribute("aria-hidden", "true");
    item.thumb.replaceWith(label);
    item.thumb = label;
  }

  setProgress(item, fraction) {
    const percent = Math.round(Math.min(1, Math.max(0, fraction)) * 100);
    item.progress.value = percent;
    item.progress.setAttribute("value", String(percent));
    if (item.state === "uploading") item.caption.textContent = `Uploading… ${percent}%`;
  }

  setState(item, state, error = "") {
    item.state = state;
    item.el.dataset.state = state;
    item.progress.hidden = !(state === "uploading" || state === "verifying");
    const captions = {
      preparing: "Preparing…",
      uploading: `Uploading… ${item.progress.value}%`,
      verifying: "Checking…",
      ready: this.readyCaption(item),
      failed: error || "The upload failed.",
    };
    item.caption.textContent = captions[state];
    item.el.classList.toggle("is-failed", state === "failed");
    if (state === "failed") {
      item.el.setAttribute("role", "alert");
      if (!item.thumb.complete || !item.thumb.naturalWidth) this.placeholderThumb(item);
    }
    this.changed();
  }

  readyCaption(item) {
    if (item.document) {
      const parts = [];
      if (item.pages) parts.push(item.pages === 1 ? "1 page" : `${item.pages.toLocaleString()} pages`);
      if (item.tokens !== null) parts.push(`≈ ${compactTokens(item.tokens)} tokens`);
      return parts.join(" · ") || "Ready";
    }
    if (!item.width) return "Ready";
    // Shrunk on the way (here or by the server): say so, since the model sees the smaller copy.
    const from = item.original;
    const scaled = from && from.width * from.height > item.width * item.height;
    const size = scaled
      ? `${from.width}×${from.height} scaled to ${item.width}×${item.height}`
      : `${item.width}×${item.height}`;
    return `${size} · ≈${(item.tokens || 0).toLocaleString()} tokens`;
  }

  /** The user removes an attachment: stop its upload and delete what the server has. */
  remove(item) {
    item.cancelled = true;
    item.request?.abort();
    this.discard(item);
  }

  discard(item) {
    if (item.id !== null) api("DELETE", `${API}${item.id}/`).catch(() => {}); // cleanup removes it later anyway
    this.drop(item);
    this.changed();
  }

  drop(item) {
    item.cancelled = true;
    if (item.blobUrl) URL.revokeObjectURL(item.blobUrl);
    item.el.remove();
    this.items = this.items.filter((other) => other !== item);
  }

  changed() {
    this.preview.hidden = this.items.length === 0;
    const ready = this.items.filter((item) => item.state === "ready");
    const tokens = ready.reduce((sum, item) => sum + (item.tokens || 0), 0);
    if (this.estimateEl) {
      this.estimateEl.hidden = ready.length === 0;
      this.estimateEl.dataset.tokens = String(tokens);
      const images = ready.filter((item) => !item.document).length;
      const documents = ready.length - images;
      const counts = [];
      if (images) counts.push(images === 1 ? "1 image" : `${images} images`);
      if (documents) counts.push(documents === 1 ? "1 document" : `${documents} documents`);
      // A document the server made no estimate for is left out of the sum, and said so.
      const unknown = ready.some((item) => item.tokens === null);
      const about = tokens ? `: about ${tokens.toLocaleString()} input tokens${unknown ? " and more" : ""}` : "";
      this.estimateEl.textContent = counts.join(", ") + about;
    }
    this.onChange();
  }
}
