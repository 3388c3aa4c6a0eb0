// A reply's text and tool steps in the order they happened (docs/ui.md, "Tool steps").
//
// A saved reply's blocks have the order: text, tool_use, tool_result, text… A streaming reply
// has its text so far and, per tool step, the delta after which it came (the `tool` frame's
// `seq`). Both become items: {kind: "text"} runs and {kind: "steps", ids} groups of steps that
// follow each other with no text between.

const STEP_TYPES = new Set(["tool_use", "server_tool_use"]);
const RESULT_TYPES = new Set(["tool_result", "web_search_tool_result"]);
const SEPARATOR = "\n\n"; // between text blocks, as the server's `text` joins them

/** The text of `blocks` as the server's saved `text` has it: text blocks joined by a blank
 * line, the text after a `continuation` block joined directly. */
export function blocksText(blocks) {
  const parts = [];
  let glue = false;
  for (const block of Array.isArray(blocks) ? blocks : []) {
    if (!block || typeof block !== "object") continue;
    if (block.type === "continuation") {
      glue = true;
    } else if (block.type === "text" && typeof block.text === "string" && block.text) {
      if (glue && parts.length) parts[parts.length - 1] += block.text;
      else parts.push(block.text);
      glue = false;
    }
  }
  return parts.join(SEPARATOR);
}

function hasText(blocks) {
  return blocks.some((b) => b?.type === "text" && typeof b.text === "string" && b.text.trim());
}

/**
 * A saved reply's items in order: {kind: "text", start, end} (a run of blocks, `end` exclusive,
 * holding text) and {kind: "steps", ids}. A result belongs to its step (by id): it starts no
 * group, but text after it is a new run.
 */
export function flowOf(content) {
  const blocks = Array.isArray(content) ? content : [];
  const items = [];
  let start = 0;
  const closeRun = (end) => {
    if (end > start && hasText(blocks.slice(start, end))) items.push({ kind: "text", start, end });
    start = end + 1;
  };
  blocks.forEach((block, index) => {
    const type = block?.type;
    if (STEP_TYPES.has(type)) {
      closeRun(index);
      const last = items[items.length - 1];
      if (last?.kind === "steps") last.ids.push(block.id);
      else items.push({ kind: "steps", ids: [block.id] });
    } else if (RESULT_TYPES.has(type)) {
      closeRun(index);
    }
  });
  closeRun(blocks.length);
  return items;
}

/** Where each step of saved (checkpointed) blocks falls in their text: [{at, id}]. */
export function splitsOf(content) {
  const blocks = Array.isArray(content) ? content : [];
  const splits = [];
  blocks.forEach((block, index) => {
    if (STEP_TYPES.has(block?.type)) splits.push({ at: blocksText(blocks.slice(0, index)).length, id: block.id });
  });
  return splits;
}

/**
 * A streaming reply's items: its text cut where each step came. `splits` are {id, at} (a text
 * position) or {id, seq} (after that delta; `seqLength` maps a delta to the text's length after
 * it; a delta not applied yet puts the step at the end for now).
 */
export function streamedFlow(text, splits, seqLength) {
  const items = [];
  let from = 0;
  const placed = splits.map((split) => {
    let at = split.at;
    if (at === undefined) at = seqLength.get(split.seq) ?? text.length;
    return { id: split.id, at: Math.min(Math.max(at, 0), text.length) };
  });
  placed.sort((a, b) => a.at - b.at); // stable: steps at the same place keep their order
  for (const { id, at } of placed) {
    const run = text.slice(from, at);
    if (run.trim()) items.push({ kind: "text", text: run });
    const last = items[items.length - 1];
    if (last?.kind === "steps" && !run.trim()) last.ids.push(id);
    else items.push({ kind: "steps", ids: [id] });
    from = Math.max(from, at);
  }
  const rest = text.slice(from);
  if (rest.trim() || !items.length) items.push({ kind: "text", text: rest });
  return items;
}
