// "↓ Latest": shown while the user has scrolled up from the end of the conversation (while a
// reply streams below, for instance); a click takes them back to the end, where new text keeps
// them (the message list stays pinned to the bottom from there).

// Further from the end than this, the button shows; about two lines of text.
const SHOW_GAP_PX = 80;

/** container: the scrolling message list; button: the "↓ Latest" button. */
export function setupScrollButton(container, button) {
  if (!container || !button) return;
  let frame = 0;
  const update = () => {
    frame = 0;
    const gap = container.scrollHeight - container.scrollTop - container.clientHeight;
    button.hidden = gap <= SHOW_GAP_PX;
  };
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(update);
  };
  container.addEventListener("scroll", schedule, { passive: true });
  // Text streaming in grows the list without a scroll event.
  new MutationObserver(schedule).observe(container, { childList: true, subtree: true, characterData: true });
  new ResizeObserver(schedule).observe(container);
  button.addEventListener("click", () => {
    container.scrollTo({ top: container.scrollHeight });
    button.hidden = true;
  });
  update();
}
