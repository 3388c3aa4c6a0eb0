"""The web search server tool, as Claude's documentation describes it (web search tool and
server tools pages).

* The tool: ``{"type": "web_search_20250305" | "web_search_20260209" | "web_search_20260318",
  "name": "web_search"}`` with optional ``max_uses`` (> 0), ``allowed_domains`` *or*
  ``blocked_domains`` (both: 400), ``user_location`` (``approximate``), ``allowed_callers``,
  and on ``_20260318`` ``response_inclusion``. Any other ``web_search_*`` type is a 400.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import invalid

VERSIONS = ("web_search_20250305", "web_search_20260209", "web_search_20260318")
ERROR_CODES = (
    "too_many_requests",
    "invalid_tool_input",
    "max_uses_exceeded",
    "query_too_long",
    "request_too_large",
    "unavailable",
)
CALLERS = ("direct", "code_execution_20260120")

_FIELDS = frozenset(
    {
        "type",
        "name",
        "max_uses",
        "allowed_domains",
        "blocked_domains",
        "user_location",
        "cache_control",
        "allowed_callers",
        "defer_loading",
        "strict",
    }
)
_LOCATION_FIELDS = ("city", "region", "country", "timezone")
_HOST_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", re.I)


# ---------------------------------------------------------------------------------------------
# The tool definition


def is_web_search(tool: Any) -> bool:
    """Whether a ``tools`` entry is (meant to be) the web search tool: its type says so."""
    return isinstance(tool, dict) and str(tool.get("type") or "").startswith("web_search")


def offered(body: dict[str, Any]) -> dict[str, Any] | None:
    """The request's web search tool definition, or ``None``."""
    return next((t for t in body.get("tools") or [] if is_web_search(t)), None)


def check_tool(tool: dict[str, Any], path: str) -> None:
    """Refuse a web search tool definition the API refuses (400)."""
    kind = tool.get("type")
    if kind not in VERSIONS:
        expected = ", ".join(f"'{v}'" for v in VERSIONS)
        raise invalid(
            f"{path}: Input tag {kind!r} found using 'type' does not match any of the expected "
            f"tags: {expected}"
        )
    where = f"{path}.{kind}"
    known = _FIELDS | ({"response_inclusion"} if kind >= "web_search_20260318" else set())
    for key in tool:
        if key not in known:
            raise invalid(f"{where}.{key}: Extra inputs are not permitted")
    if tool.get("name") != "web_search":
        raise invalid(f"{where}.name: Input should be 'web_search'")
    _check_max_uses(tool.get("max_uses"), where)
    allowed, blocked = tool.get("allowed_domains"), tool.get("blocked_domains")
    if allowed is not None and blocked is not None:
        raise invalid(
            f"{where}: Cannot specify both allowed_domains and blocked_domains in the same request"
        )
    for key in ("allowed_domains", "blocked_domains"):
        _check_domains(tool.get(key), f"{where}.{key}")
    _check_location(tool.get("user_location"), f"{where}.user_location")
    callers = tool.get("allowed_callers")
    if callers is not None and (
        not isinstance(callers, list) or not callers or any(c not in CALLERS for c in callers)
    ):
        allowed_callers = " or ".join(f"'{c}'" for c in CALLERS)
        raise invalid(f"{where}.allowed_callers: each entry should be {allowed_callers}")
    inclusion = tool.get("response_inclusion")
    if inclusion is not None and inclusion not in ("full", "excluded"):
        raise invalid(f"{where}.response_inclusion: Input should be 'full' or 'excluded'")


def _check_max_uses(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(f"{where}.max_uses: Input should be a valid integer")
    if value < 1:
        raise invalid(f"{where}.max_uses: Input should be greater than 0")


def _check_domains(entries: Any, where: str) -> None:
    """Bare domains with an optional path; ``*`` only in the path."""
    if entries is None:
        return
    if not isinstance(entries, list):
        raise invalid(f"{where}: Input should be a valid list")
    for k, entry in enumerate(entries):
        if not isinstance(entry, str):
            raise invalid(f"{where}.{k}: Input should be a valid string")
        host, _, rest = entry.partition("/")
        if "://" in entry or not entry.isascii() or not _HOST_RE.match(host):
            raise invalid(
                f"{where}.{k}: Invalid domain {entry!r}: give a bare domain with an optional "
                "path, without a scheme (for example `example.com` or `example.com/blog`)"
            )
        if rest.count("*") > 1:
            raise invalid(f"{where}.{k}: Invalid domain {entry!r}: at most one `*` is allowed")


def _check_location(location: Any, where: str) -> None:
    if location is None:
        return
    if not isinstance(location, dict):
        raise invalid(f"{where}: Input should be a valid dictionary")
    if location.get("type") != "approximate":
        raise invalid(f"{where}.type: Input should be 'approximate'")
    for key in location:
        if key != "type" and key not in _LOCATION_FIELDS:
            raise invalid(f"{where}.{key}: Extra inputs are not permitted")
    given = {k: location[k] for k in _LOCATION_FIELDS if location.get(k) is not None}
    if not given:
        raise invalid(f"{where}: provide at least one of city, region, country or timezone")
    for key, value in given.items():
        if not isinstance(value, str) or not value:
            raise invalid(f"{where}.{key}: Input should be a non-empty string")
    country = given.get("country")
    if country is not None and not re.fullmatch(r"[A-Z]{2}", country):
        raise invalid(
            f"{where}.country: {country!r} is not a supported two-letter ISO 3166-1 country code"
        )
