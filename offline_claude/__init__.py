"""Offline Claude: a local server speaking the real Anthropic Messages API wire protocol.

The Django app reaches it only through the official ``anthropic`` SDK by pointing
``ANTHROPIC_BASE_URL`` at it. Replies are deterministic and can be steered from the
user's latest text message with an ``[[offline key=value ...]]`` directive; see
``docs/offline-claude.md``. Run it with ``python -m offline_claude --port 8765``.
"""

from __future__ import annotations

from .app import OfflineClaude, app, create_app

__all__ = ["OfflineClaude", "app", "create_app"]
