"""Settings for claudeweb, read once from the environment (and `.env`, see claudeweb/dotenv.py).

Every variable has a safe default for development (SQLite, the in-memory channel layer, the
offline Claude) and is documented in .env.example. Bad values fail loudly here; cross-field
rules (an API key is needed when no base URL is set, …) are Django system checks in chat/checks.py.
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from claudeweb import dotenv

BASE_DIR = Path(__file__).resolve().parent.parent

# .env (when present) fills in what the environment does not set; environment variables win.
try:
    dotenv.load(BASE_DIR)
except dotenv.EnvFileError as exc:
    raise ImproperlyConfigured(str(exc)) from None


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def envint(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None


def envfloat(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {raw!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


DEBUG = envbool("DJANGO_DEBUG", True)
SECRET_KEY = env("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is false")
    SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # noqa: S105
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "claudeweb.apps.AdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "chat",
]

MIDDLEWARE = [
    "claudeweb.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "claudeweb.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Re-checks a single sign-on session with the provider once its ID token has expired
    # (does nothing when SSO is off or for password sessions).
    "chat.accounts.middleware.SsoSessionRefresh",
    # Last, as django-axes asks: it turns a lockout into the login page's answer.
    "axes.middleware.AxesMiddleware",
]
if DEBUG:
    # Static files from the finders are served uncompressed: gzip them (see the middleware).
    MIDDLEWARE.insert(
        MIDDLEWARE.index("whitenoise.middleware.WhiteNoiseMiddleware"),
        "claudeweb.middleware.DebugStaticGzipMiddleware",
    )

ROOT_URLCONF = "claudeweb.urls"
ADMIN_URL_PREFIX = "admin/"
ASGI_APPLICATION = "claudeweb.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "chat.context_processors.claudeweb",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"), conn_max_age=60
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the page read while a reply checkpoints; the timeout rides out short write locks.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env("REDIS_URL")
if REDIS_URL:
    # The pub/sub layer delivers every coalesced delta under load; RedisChannelLayer drops
    # group messages silently past its per-channel capacity. chat/layers.py adds in-process
    # delivery: a frame goes through Redis only while another process has a member of its group.
    # Pub/sub channels are global to a Redis server (database numbers do not separate them):
    # the prefix keeps deployments sharing one server apart — by default, by database number.
    _redis_db = (urlsplit(REDIS_URL).path.strip("/") or "0").split("/")[0]
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat.layers.LocalFirstPubSubChannelLayer",
            "CONFIG": {
                "hosts": [REDIS_URL],
                "prefix": env("CHANNEL_LAYER_PREFIX", f"claudeweb.db{_redis_db}"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "login"
# django-axes first: it refuses a locked-out login before the password is checked. It counts
# single sign-on too: an address locked out cannot finish a sign-in at the provider either.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "chat.accounts.backend.SsoBackend",
]

# --- Single sign-on (OpenID Connect, docs/admin.md) ------------------------------------------
# Off while OIDC_ISSUER is empty. The provider's endpoints come from its discovery document
# (<issuer>/.well-known/openid-configuration), fetched on first use and cached.
OIDC_ISSUER = env("OIDC_ISSUER").rstrip("/")
OIDC_RP_CLIENT_ID = env("OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env("OIDC_CLIENT_SECRET")
OIDC_RP_SCOPES = env("OIDC_SCOPES", "openid email profile groups")
OIDC_GROUPS_CLAIM = env("OIDC_GROUPS_CLAIM", "groups")
OIDC_USERNAME_CLAIM = env("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_PROVIDER_NAME = env("OIDC_PROVIDER_NAME", "single sign-on")
# Seconds to wait for the provider (discovery, tokens, keys, user info).
OIDC_TIMEOUT = envfloat("OIDC_TIMEOUT_S", 10.0)
# The password form on /login/ and /admin/login/; off: single sign-on only (check E033).
PASSWORD_LOGIN = envbool("PASSWORD_LOGIN", True)
# mozilla-django-oidc's own settings: the authorization-code flow with PKCE and a nonce, ID
# tokens signed with RS256 (every provider of docs/admin.md signs so), the ID token kept in the
# session for the provider's logout (id_token_hint).
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_USE_PKCE = True
OIDC_STORE_ID_TOKEN = True
OIDC_CREATE_USER = True
LOGIN_REDIRECT_URL_FAILURE = "login"

# --- Login throttling (django-axes) -----------------------------------------------------------
# The LOGIN_FAILURE_LIMIT-th failed login locks its username (whatever the address tried from)
# and its address (whatever the usernames tried from it) for LOGIN_COOLOFF_MINUTES (0: until an
# admin unlocks it). A successful login before the limit clears the failures
# counted against its username and its address. The address is REMOTE_ADDR: behind a proxy,
# Daphne's --proxy-headers sets it from X-Forwarded-For, which the proxy must overwrite
# (docs/deploy.md).
LOGIN_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 5)
LOGIN_COOLOFF_MINUTES = envint("LOGIN_COOLOFF_MINUTES", 15)
# "username,ip_address": each on its own; "username+ip_address": only that pair together.
LOGIN_LOCKOUT_BY = [
    item.split("+") if "+" in item else item
    for item in envlist("LOGIN_LOCKOUT_BY", "username,ip_address")
]
AXES_ENABLED = envbool("LOGIN_THROTTLING", True)
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_COOLOFF_MINUTES) if LOGIN_COOLOFF_MINUTES else None
AXES_LOCKOUT_PARAMETERS = LOGIN_LOCKOUT_BY
AXES_RESET_ON_SUCCESS = envbool("LOGIN_RESET_ON_SUCCESS", True)
AXES_LOCKOUT_CALLABLE = "chat.views.passwords.locked_out"
AXES_CLIENT_IP_CALLABLE = "chat.views.passwords.client_address"
AXES_VERBOSE = False

# --- Sessions ---------------------------------------------------------------------------------
# In the database (Django's default backend), each mapped to its user at login so they can be
# ended at once (chat/accounts/sessions.py). SESSION_COOKIE_AGE is the most a session lives;
# with SESSION_SAVE_EVERY_REQUEST it is counted from the last request instead (an idle timeout).
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 14 * 24 * 3600)
SESSION_EXPIRE_AT_BROWSER_CLOSE = envbool("SESSION_EXPIRE_AT_BROWSER_CLOSE", False)
SESSION_SAVE_EVERY_REQUEST = envbool("SESSION_SAVE_EVERY_REQUEST", False)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Collected files are served by whitenoise outside DEBUG; in DEBUG the finders serve static/.
STATIC_ROOT = None if DEBUG else BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = DEBUG
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "claudeweb.storage.StaticStorage"
        )
    },
}

# Security headers; the HTTPS-only ones are on when DEBUG is off.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
if env("DJANGO_SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = (env("DJANGO_SECURE_PROXY_SSL_HEADER"), "https")

# --- Claude ---------------------------------------------------------------------------------
# The SDK reads these two itself as well; they are read here so checks and the UI can see them.
ANTHROPIC_API_KEY = env("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env("ANTHROPIC_BASE_URL")
CLAUDE_MODEL_CATALOGUE = Path(
    env("CLAUDE_MODEL_CATALOGUE", str(BASE_DIR / "chat" / "claude" / "models.json"))
)
CLAUDE_DEFAULT_MODEL = env("CLAUDE_DEFAULT_MODEL", "claude-sonnet-5-5")
# Titles and summaries: the cheapest model whose window fits a summary's input.
CLAUDE_FAST_MODEL = env("CLAUDE_FAST_MODEL", "claude-haiku-5-5")
# A request's max_tokens is the model's max output capped by this. Not the full 128K: thinking
# models spend output on thinking, so 4096 cut replies short, but every running reply holds its
# max_tokens (and their price) against the budgets. CLAUDE_MAX_TOKENS is its earlier name, still
# read.
CLAUDE_MAX_OUTPUT_TOKENS = envint("CLAUDE_MAX_OUTPUT_TOKENS", envint("CLAUDE_MAX_TOKENS", 16000))
CLAUDE_MAX_TOOL_ITERATIONS = envint("CLAUDE_MAX_TOOL_ITERATIONS", 5)
# Server-side compaction (models whose catalogue row says "compaction"): the API summarises the
# conversation when a request's input reaches this many tokens. 150,000 is the API's own
# default; it takes no less than 50,000 (system check E010).
CLAUDE_COMPACTION_TRIGGER_TOKENS = envint("CLAUDE_COMPACTION_TRIGGER_TOKENS", 150_000)
# Web search, Anthropic's server tool: off unless an admin turns it on. A reply may then run up
# to MAX_USES searches (each priced in the catalogue on top of tokens), only on the allowed
# domains or never on the blocked ones (one list or the other: the API refuses both).
# web_search_20250305 works with every model of the catalogue; the later versions filter results
# with code execution, on 4.6 and later models only.
CLAUDE_WEB_SEARCH = envbool("CLAUDE_WEB_SEARCH", False)
CLAUDE_WEB_SEARCH_TOOL = env("CLAUDE_WEB_SEARCH_TOOL", "web_search_20250305")
CLAUDE_WEB_SEARCH_MAX_USES = envint("CLAUDE_WEB_SEARCH_MAX_USES", 5)
CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS = envlist("CLAUDE_WEB_SEARCH_ALLOWED_DOMAINS", "")
CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS = envlist("CLAUDE_WEB_SEARCH_BLOCKED_DOMAINS", "")
CLAUDE_MAX_RETRIES = envint("CLAUDE_MAX_RETRIES", 2)
CLAUDE_READ_TIMEOUT_S = envfloat("CLAUDE_READ_TIMEOUT_S", 60.0)
CLAUDE_CONNECT_TIMEOUT_S = envfloat("CLAUDE_CONNECT_TIMEOUT_S", 10.0)
CLAUDE_SYSTEM_PROMPT = env(
    "CLAUDE_SYSTEM_PROMPT",
    "You are Claude, a helpful assistant. Answer clearly; use Markdown for structure and code.",
)
# A cap on each conversation's tokens (every call's input, cache reads included, and output);
# 0: none. Budgets are money per user by default (USER_*_COST_BUDGET below): a conversation
# re-sends its history on every turn, so a token cap ends long chats early.
CONVERSATION_TOKEN_BUDGET = envint("CONVERSATION_TOKEN_BUDGET", 0)

# --- Streaming --------------------------------------------------------------------------------
MESSAGE_MAX_CHARS = envint("MESSAGE_MAX_CHARS", 100_000)
STREAM_COALESCE_MS = envint("STREAM_COALESCE_MS", 40)
STREAM_CHECKPOINT_S = envfloat("STREAM_CHECKPOINT_S", 1.0)
STREAM_REPLAY_KEEP_S = envfloat("STREAM_REPLAY_KEEP_S", 60.0)
# A streaming reply whose process has not checkpointed for this long is marked interrupted.
STREAM_STALE_S = envfloat("STREAM_STALE_S", 30.0)
CONVERSATIONS_PER_PAGE = envint("CONVERSATIONS_PER_PAGE", 50)

# --- Images (S3) ------------------------------------------------------------------------------
# Any S3-compatible store: AWS S3, Cloudflare R2, MinIO, or the local server `make run` starts.
# boto3 also reads AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", "claudeweb")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL") or None
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", "us-east-1")
AWS_S3_ADDRESSING_STYLE = env("AWS_S3_ADDRESSING_STYLE", "path" if AWS_S3_ENDPOINT_URL else "auto")
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_DEFAULT_ACL = None
AWS_QUERYSTRING_AUTH = True
STORAGES["attachments"] = {"BACKEND": "storages.backends.s3.S3Storage"}
# Largest upload accepted (before the server re-encodes it), in bytes.
IMAGE_UPLOAD_MAX_BYTES = envint("IMAGE_UPLOAD_MAX_BYTES", 20 * 1024 * 1024)
# Decompression-bomb guard: images above this many pixels are refused.
IMAGE_MAX_PIXELS = envint("IMAGE_MAX_PIXELS", 25_000_000)
# Stored images: long edge at most this many pixels and at most this many bytes.
IMAGE_LONG_EDGE_PX = envint("IMAGE_LONG_EDGE_PX", 1568)
# 3.75 MiB: sent as base64 it grows by a third, and the API's limit is 5 MB per image.
IMAGE_STORED_MAX_BYTES = envint("IMAGE_STORED_MAX_BYTES", 3_932_160)
# The browser shrinks images whose long edge is above this before uploading.
IMAGE_BROWSER_LONG_EDGE_PX = envint("IMAGE_BROWSER_LONG_EDGE_PX", 2048)
IMAGE_MAX_PER_MESSAGE = envint("IMAGE_MAX_PER_MESSAGE", 10)
# Image decodes (finishing an upload) at once per process; each may take ~100 MB. A finish
# waits this many seconds for a turn, then answers 503 busy with Retry-After (stays pending).
IMAGE_VERIFY_CONCURRENCY = envint("IMAGE_VERIFY_CONCURRENCY", 2)
IMAGE_VERIFY_WAIT_SECONDS = envfloat("IMAGE_VERIFY_WAIT_SECONDS", 10.0)
PRESIGN_POST_EXPIRY_SECONDS = envint("PRESIGN_POST_EXPIRY_SECONDS", 300)
PRESIGN_GET_EXPIRY_SECONDS = envint("PRESIGN_GET_EXPIRY_SECONDS", 600)
# How images reach Claude: "url" (a presigned GET; the bucket must be reachable from the
# internet), "base64", or "auto" (base64 when the S3 endpoint is on this machine or a private
# network, else url).
IMAGE_DELIVERY = env("IMAGE_DELIVERY", "auto")
# Documents (PDF, plain text, Markdown) go through the same upload flow as images.
# 32 MiB: the Messages API takes requests of up to 32 MB, PDFs included (PDF support page).
DOCUMENT_MAX_BYTES = envint("DOCUMENT_MAX_BYTES", 32 * 1024 * 1024)
# 2 MiB of text is about 500,000 tokens at ~4 bytes a token: half a 1M-token window, which leaves
# room for the conversation; a larger file could never be sent whole with it.
TEXT_DOCUMENT_MAX_BYTES = envint("TEXT_DOCUMENT_MAX_BYTES", 2 * 1024 * 1024)
# Pages per PDF: the API takes 600 on models with a 1M-token window, 100 on the others. A PDF
# above DOCUMENT_MAX_PAGES is refused at upload; the model's limit is applied when it is sent.
DOCUMENT_MAX_PAGES = envint("DOCUMENT_MAX_PAGES", 600)
DOCUMENT_MAX_PAGES_SMALL_WINDOW = envint("DOCUMENT_MAX_PAGES_SMALL_WINDOW", 100)
# The largest request the Messages API takes, in bytes: 32 MB on Anthropic's API ("varies by
# platform"). A reply whose files (base64 PDFs and images, text files, earlier turns' included)
# would pass it is refused before the call, with nothing saved.
CLAUDE_REQUEST_MAX_BYTES = envint("CLAUDE_REQUEST_MAX_BYTES", 32 * 1024 * 1024)
# Attachments uploaded but never sent are removed after this many hours (cleanup command).
ATTACHMENT_UNSENT_TTL_HOURS = envint("ATTACHMENT_UNSENT_TTL_HOURS", 24)

# Mail: password reset links, and budget alerts to DJANGO_ADMINS (comma-separated addresses).
# Without EMAIL_HOST mail is written to the console (the process's output), not sent.
EMAIL_HOST = env("EMAIL_HOST", "")
ADMINS = [("", email) for email in envlist("DJANGO_ADMINS", "")] if EMAIL_HOST else []
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "claudeweb@localhost")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = envint("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", True)
    SERVER_EMAIL = env("SERVER_EMAIL") or DEFAULT_FROM_EMAIL
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
# A password reset link works once, for this many seconds.
PASSWORD_RESET_TIMEOUT = envint("PASSWORD_RESET_TIMEOUT", 3 * 3600)

# --- Abuse limits (per user) ------------------------------------------------------------------
RATE_SENDS_PER_MINUTE = envint("RATE_SENDS_PER_MINUTE", 20)
RATE_UPLOADS_PER_MINUTE = envint("RATE_UPLOADS_PER_MINUTE", 30)
RATE_MAX_CONCURRENT_REPLIES = envint("RATE_MAX_CONCURRENT_REPLIES", 3)

# --- Budgets and limits -------------------------------------------------------------------------
# Per-user defaults (admins can set each user's own); 0 means no limit of that kind. Money by
# default: USD a day and a month, counted from the ledger's cost (cache reads at their price).
USER_DAILY_COST_BUDGET = env("USER_DAILY_COST_BUDGET", "5")
USER_MONTHLY_COST_BUDGET = env("USER_MONTHLY_COST_BUDGET", "50")
USER_DAILY_TOKEN_BUDGET = envint("USER_DAILY_TOKEN_BUDGET", 0)
USER_MONTHLY_TOKEN_BUDGET = envint("USER_MONTHLY_TOKEN_BUDGET", 0)

# --- Operations ---------------------------------------------------------------------------------
# /metrics (claudeweb/metrics.py): off (404) unless a bearer token or an address allow-list is set.
METRICS_TOKEN = env("METRICS_TOKEN")
if METRICS_TOKEN and len(METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("METRICS_TOKEN must be at least 16 characters")
try:
    # Networks as written (a bare address is a /32 or /128); host bits set are an error.
    METRICS_ALLOWED_ADDRESSES = [
        ipaddress.ip_network(cidr) for cidr in envlist("METRICS_ALLOWED_ADDRESSES", "")
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_ADDRESSES: {exc}") from None
# prometheus-client's own variable: set (to an empty directory, before any process starts) when
# several processes serve the app, so that /metrics adds up all of them.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR")

# Error reports to Sentry (claudeweb/error_reports.py): off unless SENTRY_DSN is set.
SENTRY_DSN = env("SENTRY_DSN")
SENTRY_ENVIRONMENT = env("SENTRY_ENVIRONMENT", "production")
if SENTRY_DSN:
    from claudeweb import error_reports

    error_reports.init(SENTRY_DSN, environment=SENTRY_ENVIRONMENT)

# LOG_FORMAT=json: one JSON object per line (claudeweb/logs.py); plain text otherwise.
LOG_FORMAT = env("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, not {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"ids": {"()": "claudeweb.logs.ContextFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "claudeweb.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["ids"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # django-axes logs every login at INFO; lockouts are WARNING.
        "axes": {"level": "WARNING"},
    },
}
