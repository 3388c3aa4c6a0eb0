// Images attached to the message being written (docs/images.md): picked with the button, dropped
// on the composer or pasted; shrunk in the browser when large; posted straight to S3 with the
// presigned POST the server signs (progress shown, cancellable); then verified by the server.
// Only verified images are sent, by id, with the message.

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
    if (!size.scaled) return { blob: file, width: bitmap.width, height: bitmap.height };
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
    return { blob, width: size.width, height: size.height };
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
  }

  /** Ids of the verified images, in the order they were attached. */
  pendingAttachmentIds() {
    return this.items.filter((item) => item.state === "ready").map((item) => item.id);
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
      this.notice(`Images cannot be attached right now: ${error.message}`);
      return;
    }
    for (const file of files) {
      const kept = this.items.filter((item) => item.state !== "failed").length;
      if (kept >= limits.max_per_message) {
        this.notice(`At most ${limits.max_per_message} images can be sent with one message.`);
        break;
      }
      if (!limits.content_types.includes(file.type)) {
        this.notice(`${file.name || "That file"} cannot be attached: use a JPEG, PNG, GIF or WebP image.`);
        continue;
      }
      this.upload(file, limits);
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
      const name = file.name || "pasted-image";
      const start = await api("POST", `${API}start/`, {
        content_type: prepared.blob.type || file.type,
        byte_size: prepared.blob.size,
        name,
      });
      item.id = start.id;
      if (item.cancelled) return this.discard(item);
      this.setState(item, "uploading");
      item.request = postToStorage(start.upload, prepared.blob, name, (f) => this.setProgress(item, f));
      await item.request.done;
      item.request = null;
      this.setProgress(item, 1);
      if (item.cancelled) return this.discard(item);
      this.setState(item, "verifying");
      const result = await finishUpload(item);
      if (item.cancelled) return this.discard(item);
      item.width = result.width;
      item.height = result.height;
      item.tokens = result.token_estimate ?? tokenEstimate(result.width, result.height);
      this.setState(item, "ready");
    } catch (error) {
      if (!item.cancelled) this.setState(item, "failed", error.message);
    }
  }

  addItem(file) {
    const item = { id: null, name: file.name || "pasted image", state: "preparing", cancelled: false };
    item.el = node("figure", "attachment-item", "attachment-item");
    item.thumb = node("img", "attachment-thumb", "attachment-thumb");
    item.thumb.alt = item.name;
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
    item.el.append(item.thumb, item.progress, item.caption, cancel);
    this.preview.append(item.el);
    this.items.push(item);
    this.setState(item, "preparing");
    return item;
  }

  showThumb(item, blob) {
    item.blobUrl = URL.createObjectURL(blob);
    item.thumb.src = item.blobUrl;
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
      ready: item.width ? `${item.width}×${item.height} · ≈${(item.tokens || 0).toLocaleString()} tokens` : "Ready",
      failed: error || "The upload failed.",
    };
    item.caption.textContent = captions[state];
    item.el.classList.toggle("is-failed", state === "failed");
    if (state === "failed") item.el.setAttribute("role", "alert");
    this.changed();
  }

  /** The user removes an image: stop its upload and delete what the server has. */
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
      const images = ready.length === 1 ? "1 image" : `${ready.length} images`;
      this.estimateEl.textContent = `${images}: about ${tokens.toLocaleString()} input tokens`;
    }
    this.onChange();
  }
}
