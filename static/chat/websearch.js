// The header's web search switch (docs/claude.md, "Web search"): shown only where the server
// allows search, saved per conversation (POST /c/<id>/web-search/), and sent with each message
// as the send frame's `web_search`.

import { postJson } from "./ui.js";

export class WebSearchToggle {
  /** input: the switch (absent where the server allows no search). url: where it is saved. */
  constructor({ input, url, notice, announce }) {
    this.input = input || null;
    this.url = url;
    this.notice = notice || (() => {});
    this.announce = announce || (() => {});
    this.saving = null;
    this.input?.addEventListener("change", () => this.save(this.input.checked));
  }

  /** Whether the page offers the switch at all. */
  get available() {
    return Boolean(this.input);
  }

  get enabled() {
    return this.available && this.input.checked;
  }

  async save(enabled) {
    // The first page has no conversation yet: the choice goes with the one its message creates.
    if (!this.url) return;
    this.saving = postJson(this.url, { enabled: enabled ? "1" : "0" });
    try {
      await this.saving;
      this.announce(enabled ? "Web search is on for this conversation." : "Web search is off.");
    } catch (error) {
      this.input.checked = !enabled;
      this.notice(`The web search setting was not saved: ${error.message}`);
    } finally {
      this.saving = null;
    }
  }

  /** Resolves once a save in flight is over, so a message sent meanwhile follows it. */
  async settled() {
    if (this.saving) await this.saving.catch(() => {});
  }
}
