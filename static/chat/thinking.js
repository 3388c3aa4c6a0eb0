// The header's thinking setting: the efforts the picked model takes, saved per conversation
// (POST /c/<id>/thinking/), and sent with each message as the send frame's `effort`.

import { postJson } from "./ui.js";

// The API's levels, lowest first (docs/claude.md, "Thinking").
export const EFFORT_LEVELS = ["low", "medium", "high", "xhigh", "max"];
const LABELS = { low: "Low effort", medium: "Medium effort", high: "High effort", xhigh: "Extra high effort", max: "Max effort" };

/** `effort` if `levels` has it, else the nearest of them (a tie goes to the lower); "" for none. */
export function nearestEffort(levels, effort) {
  if (levels.includes(effort)) return effort;
  const rank = EFFORT_LEVELS.indexOf(effort);
  if (!levels.length || rank < 0) return "";
  let best = "";
  let bestDistance = Infinity;
  for (const level of levels) {
    const distance = Math.abs(EFFORT_LEVELS.indexOf(level) - rank);
    if (distance < bestDistance) [best, bestDistance] = [level, distance];
  }
  return best;
}

export class ThinkingPicker {
  /** models: the page config's models ({id, efforts, always_thinks, default_effort}). */
  constructor({ wrapper, select, models, effort, url, notice, announce }) {
    this.wrapper = wrapper;
    this.select = select;
    this.models = new Map((models || []).map((m) => [m.id, m]));
    // The user's choice; what is shown is the nearest the picked model takes.
    this.wanted = effort || "";
    this.url = url;
    this.notice = notice || (() => {});
    this.announce = announce || (() => {});
    this.model = null;
    this.saving = null;
    select.addEventListener("change", () => this.choose(select.value));
  }

  /** The picked model changed: show its efforts, keeping the choice or the nearest level. */
  setModel(modelId) {
    this.model = this.models.get(modelId) || null;
    const levels = this.model?.efforts || [];
    this.wrapper.hidden = levels.length === 0;
    const options = [["", this.model?.always_thinks ? "Always on" : "Off"]];
    for (const level of levels) {
      const isDefault = level === this.model.default_effort;
      options.push([level, isDefault ? `${LABELS[level]} (default)` : LABELS[level]]);
    }
    this.select.replaceChildren(
      ...options.map(([value, label]) => {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = label;
        return option;
      }),
    );
    this.select.value = nearestEffort(levels, this.wanted);
  }

  /** The effort the next message asks for ("" for none). */
  get effort() {
    return this.wrapper.hidden ? "" : this.select.value;
  }

  async choose(effort) {
    const previous = this.wanted;
    this.wanted = effort;
    // The first page has no conversation yet: the choice goes with the one its message creates.
    if (!this.url) return;
    const model = this.model?.id;
    this.saving = postJson(this.url, model ? { effort, model } : { effort });
    try {
      await this.saving;
      this.announce(`Thinking: ${this.select.selectedOptions[0]?.textContent || effort || "off"}.`);
    } catch (error) {
      this.wanted = previous;
      this.select.value = nearestEffort(this.model?.efforts || [], previous);
      this.notice(`The thinking setting was not saved: ${error.message}`);
    } finally {
      this.saving = null;
    }
  }

  /** Resolves once a save in flight is over, so a message sent meanwhile follows it. */
  async settled() {
    if (this.saving) await this.saving.catch(() => {});
  }
}
