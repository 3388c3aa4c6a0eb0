"""System checks: clear messages for bad configuration, at startup and in `manage.py check`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from chat.claude import catalogue
from chat.claude.request_body import WEB_SEARCH_TOOLS

# The smallest compaction trigger the API takes (compaction-threshold page, trigger.value).
COMPACTION_MIN_TRIGGER = 50_000
# A token cap smaller than this could not hold one reply's max_tokens.
MIN_TOKEN_BUDGET = 1000
USER_BUDGET_SETTINGS = (
    "USER_DAILY_COST_BUDGET",
    "USER_MONTHLY_COST_BUDGET",
    "USER_DAILY_TOKEN_BUDGET",
    "USER_MONTHLY_TOKEN_BUDGET",
)


@register(Tags.compatibility)
def check_claude_settings(app_configs=None, **kwargs) -> list[CheckMessage]:
    errors = [*_api_access(), *_reply_limits()]
    try:
        models = {m.id for m in catalogue.all_models()}
    except (OSError, ValueError, KeyError) as exc:
        return [*errors, _unreadable_catalogue(exc)]
    return [
        *errors,
        *_default_models(models),
        *_sizes(),
        *_streaming(),
        *_images(),
        *_web_search(),
        *_documents(),
    ]


def _api_access() -> list[CheckMessage]:
    if settings.ANTHROPIC_API_KEY or settings.ANTHROPIC_BASE_URL:
        return []
    return [
        Error(
            "ANTHROPIC_API_KEY is not set.",
            hint="Set ANTHROPIC_API_KEY, or ANTHROPIC_BASE_URL to a local Messages API "
            "server such as the offline model (`make run` starts one).",
            id="claudeweb.E001",
        )
    ]


def _reply_limits() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if not 1 <= settings.CLAUDE_MAX_TOOL_ITERATIONS <= 10:
        errors.append(
            Error(
                f"CLAUDE_MAX_TOOL_ITERATIONS is {settings.CLAUDE_MAX_TOOL_ITERATIONS}.",
                hint="Use a whole number from 1 to 10.",
                id="claudeweb.E002",
            )
        )
    budget = settings.CONVERSATION_TOKEN_BUDGET
    if budget != 0 and budget < MIN_TOKEN_BUDGET:
        errors.append(
            Error(
                f"CONVERSATION_TOKEN_BUDGET is {budget}.",
                hint=f"0 (no cap) or at least {MIN_TOKEN_BUDGET}.",
                id="claudeweb.E003",
            )
        )
    return errors + _user_budgets()


def _user_budgets() -> list[CheckMessage]:
    """The per-user defaults: a number, not negative (0: no limit of that kind)."""
    errors: list[CheckMessage] = []
    for name in USER_BUDGET_SETTINGS:
        raw = getattr(settings, name)
        try:
            value = Decimal(str(raw))
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value < 0:
            errors.append(
                Error(
                    f"{name} is {raw!r}.",
                    hint="A number of at least 0 (0: no limit); money in USD, e.g. 5 or 2.50.",
                    id="claudeweb.E018",
                )
            )
    return errors


def _unreadable_catalogue(exc: Exception) -> CheckMessage:
    return Error(
        f"The model catalogue {settings.CLAUDE_MODEL_CATALOGUE} cannot be read: {exc}",
        hint="CLAUDE_MODEL_CATALOGUE must name a JSON file like chat/models.json.",
        id="claudeweb.E004",
    )


def _default_models(models: set[str]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in ("CLAUDE_DEFAULT_MODEL", "CLAUDE_FAST_MODEL"):
        model_id = getattr(settings, name)
        if model_id not in models:  # new conversations could not start: an error, not a warning
            errors.append(
                Error(
                    f"{name} is {model_id!r}, which is not in the catalogue.",
                    hint=f"Use one of: {', '.join(sorted(models))}.",
                    id="claudeweb.E005",
                )
            )
        elif (info := catalogue.get_model(model_id)).retirement or info.status == "deprecated":
            errors.append(
                Warning(
                    f"{name} is {model_id!r}, which is {info.status}"
                    f"{f' (retirement: {info.retirement})' if info.retirement else ''}.",
                    hint="Move the default to a current model of the catalogue.",
                    id="claudeweb.W001",
                )
            )
    return errors


def _sizes() -> list[CheckMessage]:
    """Output tokens, the compaction trigger and the length of a message."""
    errors: list[CheckMessage] = []
    if settings.CLAUDE_MAX_OUTPUT_TOKENS < 1:
        errors.append(Error("CLAUDE_MAX_OUTPUT_TOKENS must be at least 1.", id="claudeweb.E006"))
    if settings.CLAUDE_COMPACTION_TRIGGER_TOKENS < COMPACTION_MIN_TRIGGER:
        errors.append(
            Error(
                f"CLAUDE_COMPACTION_TRIGGER_TOKENS is {settings.CLAUDE_COMPACTION_TRIGGER_TOKENS}.",
                hint=f"The API takes a compaction trigger of at least {COMPACTION_MIN_TRIGGER:,}.",
                id="claudeweb.E012",
            )
        )
    if settings.MESSAGE_MAX_CHARS < 1:
        errors.append(Error("MESSAGE_MAX_CHARS must be at least 1.", id="claudeweb.E007"))
    return errors


def _streaming() -> list[CheckMessage]:
    if settings.STREAM_COALESCE_MS >= 0 and settings.STREAM_CHECKPOINT_S > 0:
        return []
    return [
        Error("STREAM_COALESCE_MS must be ≥ 0 and STREAM_CHECKPOINT_S > 0.", id="claudeweb.E008")
    ]


def _images() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if settings.IMAGE_DELIVERY not in ("auto", "url", "base64"):
        errors.append(
            Error(
                f"IMAGE_DELIVERY is {settings.IMAGE_DELIVERY!r}.",
                hint="Use auto, url or base64.",
                id="claudeweb.E009",
            )
        )
    if settings.IMAGE_VERIFY_CONCURRENCY < 1:
        errors.append(
            Error(
                f"IMAGE_VERIFY_CONCURRENCY is {settings.IMAGE_VERIFY_CONCURRENCY}.",
                hint="Use a whole number of at least 1 (image checks at once per process; "
                "each may take about 100 MB).",
                id="claudeweb.E010",
            )
        )
    if not 0 <= settings.IMAGE_VERIFY_WAIT_SECONDS <= 60:
        errors.append(
            Error(
                f"IMAGE_VERIFY_WAIT_SECONDS is {settings.IMAGE_VERIFY_WAIT_SECONDS}.",
                hint="Use 0 to 60 seconds; past that a proxy may give up on the request first.",
                id="claudeweb.E011",
            )
        )
    return errors


# The Messages API's limits for PDFs (PDF support page): requests of at most 32 MB, and at most
# 600 pages (100 on models with a smaller window than 1M tokens).
API_REQUEST_MAX_BYTES = 32 * 1024 * 1024
API_MAX_PDF_PAGES = 600


def _documents() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    pdf, text = settings.DOCUMENT_MAX_BYTES, settings.TEXT_DOCUMENT_MAX_BYTES
    if not (1 <= pdf <= API_REQUEST_MAX_BYTES and 1 <= text <= API_REQUEST_MAX_BYTES):
        errors.append(
            Error(
                f"DOCUMENT_MAX_BYTES is {pdf} and TEXT_DOCUMENT_MAX_BYTES is {text}.",
                hint=f"Use 1 to {API_REQUEST_MAX_BYTES:,} bytes (the API takes requests of "
                "up to 32 MB); a larger document could never be sent.",
                id="claudeweb.E013",
            )
        )
    if settings.CLAUDE_REQUEST_MAX_BYTES < 1024 * 1024:
        errors.append(
            Error(
                f"CLAUDE_REQUEST_MAX_BYTES is {settings.CLAUDE_REQUEST_MAX_BYTES}.",
                hint="Use the platform's request limit in bytes (33554432 on Anthropic's API), "
                "at least 1 MiB.",
                id="claudeweb.E019",
            )
        )
    pages, small = settings.DOCUMENT_MAX_PAGES, settings.DOCUMENT_MAX_PAGES_SMALL_WINDOW
    if not 1 <= small <= pages <= API_MAX_PDF_PAGES:
        errors.append(
            Error(
                f"DOCUMENT_MAX_PAGES is {pages} and DOCUMENT_MAX_PAGES_SMALL_WINDOW is {small}.",
                hint=f"Use 1 ≤ DOCUMENT_MAX_PAGES_SMALL_WINDOW ≤ DOCUMENT_MAX_PAGES ≤ "
                f"{API_MAX_PDF_PAGES} (the API's 100 and 600 pages).",
                id="claudeweb.E014",
            )
        )
    return errors


def _web_search() -> list[CheckMessage]:
    """The web search tool as the API takes it (checked whether or not it is turned on)."""
    errors: list[CheckMessage] = []
    if settings.CLAUDE_WEB_SEARCH_TOOL not in WEB_SEARCH_TOOLS:
        errors.append(
            Error(
                f"CLAUDE_WEB_SEARCH_TOOL is {settings.CLAUDE_WEB_SEARCH_TOOL!r}.",
                hint=f"One of {', '.join(WEB_SEARCH_TOOLS)}.",
                id="claudeweb.E015",
            )
        )
    if settings.CLAUDE_WEB_SEARCH_MAX_USES < 1:
        errors.append(Error("CLAUDE_WEB_SEARCH_MAX_USES must be at least 1.", id="claudeweb.E016"))
    if settings.CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS and settings.CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS:
        errors.append(
            Error(
                "CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS and CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS "
                "are both set.",
                hint="The API takes allowed or blocked domains, not both: keep one list.",
                id="claudeweb.E017",
            )
        )
    return errors


@register(Tags.security)
def check_sso_settings(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Single sign-on is all or nothing: half a configuration is refused."""
    issuer, client_id, secret = (
        settings.OIDC_ISSUER,
        settings.OIDC_RP_CLIENT_ID,
        settings.OIDC_RP_CLIENT_SECRET,
    )
    errors: list[CheckMessage] = []
    if issuer and not (client_id and secret):
        missing = " and ".join(
            name
            for name, v in (("OIDC_CLIENT_ID", client_id), ("OIDC_CLIENT_SECRET", secret))
            if not v
        )
        errors.append(
            Error(
                f"OIDC_ISSUER is set but {missing} is not.",
                hint="Set both to the client registered at the provider (docs/admin.md, "
                "Single sign-on), or unset OIDC_ISSUER to turn single sign-on off.",
                id="claudeweb.E030",
            )
        )
    if not issuer and (client_id or secret):
        errors.append(
            Error(
                "OIDC_CLIENT_ID or OIDC_CLIENT_SECRET is set but OIDC_ISSUER is not.",
                hint="Set OIDC_ISSUER to the provider's issuer URL (its discovery document is "
                "<issuer>/.well-known/openid-configuration), or unset the client settings.",
                id="claudeweb.E031",
            )
        )
    if issuer and not issuer.startswith(("https://", "http://")):
        errors.append(
            Error(
                f"OIDC_ISSUER is {issuer!r}.",
                hint="The issuer is an https:// URL, e.g. https://sso.example.com/realms/staff.",
                id="claudeweb.E032",
            )
        )
    if not settings.PASSWORD_LOGIN and not issuer:
        errors.append(
            Error(
                "PASSWORD_LOGIN is off and single sign-on is not configured: nobody could sign in.",
                hint="Set OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET, or turn "
                "PASSWORD_LOGIN back on.",
                id="claudeweb.E033",
            )
        )
    return errors


LOCKOUT_PARAMETERS = {"username", "ip_address", "user_agent"}


@register(Tags.security)
def check_login_settings(app_configs=None, **kwargs) -> list[CheckMessage]:
    errors = []
    if settings.LOGIN_FAILURE_LIMIT < 1:
        errors.append(Error("LOGIN_FAILURE_LIMIT must be at least 1.", id="claudeweb.E040"))
    if settings.LOGIN_COOLOFF_MINUTES < 0:
        errors.append(Error("LOGIN_COOLOFF_MINUTES must be 0 or more.", id="claudeweb.E041"))
    named = {
        name
        for item in settings.LOGIN_LOCKOUT_BY
        for name in ([item] if isinstance(item, str) else item)
    }
    if not settings.LOGIN_LOCKOUT_BY or not named <= LOCKOUT_PARAMETERS:
        errors.append(
            Error(
                f"LOGIN_LOCKOUT_BY names {sorted(named - LOCKOUT_PARAMETERS) or 'nothing'}.",
                hint="A comma-separated list of username, ip_address, user_agent, or pairs "
                "joined with + (username+ip_address).",
                id="claudeweb.E042",
            )
        )
    if settings.SESSION_COOKIE_AGE < 60:
        errors.append(Error("SESSION_COOKIE_AGE must be at least 60 seconds.", id="claudeweb.E043"))
    return errors
