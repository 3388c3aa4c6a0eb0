"""Saved replies as HTML the chat page carries, so it shows them before any script has run.

The page's script renders model text in the browser (static/chat/render.js: marked, then
DOMPurify); this module holds saved text to the same rules on the server, for the messages the
page draws itself (chat/views/drawn.py):

- Markdown as CommonMark with GitHub's tables, strikethrough and bare links (markdown-it-py, the
  Python port of markdown-it; marked follows the same specifications);
- HTML the model writes is shown as text, the way it was typed; images become links to them (they
  would load from anywhere the model names);
- a link keeps its href only when it is an absolute http, https or mailto URL, and opens in a new
  tab without access to the page; any other href is dropped, leaving the link text;
- code blocks carry their language and a Copy button (render.js's decorateCodeBlocks); code in a
  language Pygments knows is coloured here, with highlight.js's class names, so the page's code
  colours apply and the page needs no highlighter for it (`data-coloured`); the script colours
  the rest later (unlabelled code, whose language it guesses), which changes no size;
- what comes out is sanitised again by an allowlist (nh3, ammonia's bindings): only the tags and
  attributes the renderer itself writes survive, whatever a bug above lets through.

Text that holds a formula is not drawn here (KaTeX renders it in the browser): `may_have_math`
tells the caller, with render.js's own pattern.
"""

from __future__ import annotations

import re
from html import escape
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments.lexers import get_lexer_by_name
from pygments.token import Comment, Generic, Keyword, Name, Number, Operator, String, _TokenType
from pygments.util import ClassNotFound

SAFE_LINK_SCHEMES = frozenset({"http", "https", "mailto"})
# render.js's MATH_HINT: what its math syntax would take for a formula, code included.
_MATH_HINT = re.compile(r"\$\$[\s\S]+?\$\$|\$(?!\s)(?:\\\$|[^$\n])+?(?<![\s\\])\$(?!\d)")
_LANGUAGE_CHARS = re.compile(r"[^\w+#.-]")

# Every tag and attribute the renderer below writes; nothing else survives the sanitiser.
_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "hr", "br",
    "em", "strong", "del", "code", "pre", "a", "table", "thead", "tbody", "tr", "th", "td",
    "div", "span", "button",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "target"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    "pre": {"data-lang"},
    "code": {"class", "data-coloured"},
    "div": {"class"},
    "span": {"class"},
    "button": {"type", "class", "data-testid", "aria-label"},
}
_ALIGN = re.compile(r"text-align:(left|right|center)")


def may_have_math(text: str) -> bool:
    """Whether `text` may hold a formula (the browser's KaTeX draws those)."""
    return bool(_MATH_HINT.search(text or ""))


def safe_url(href: str) -> str | None:
    """`href` when it is an absolute http(s) or mailto URL, else None (relative, javascript:…)."""
    href = (href or "").strip()
    try:
        parts = urlsplit(href)
    except ValueError:
        return None
    if parts.scheme.lower() not in SAFE_LINK_SCHEMES:
        return None
    if parts.scheme.lower() != "mailto" and not parts.hostname:
        return None
    return href


def language_name(info: str) -> str:
    """A fence's language as render.js names it: its first word, lower case, safe characters."""
    words = (info or "").strip().split()
    return _LANGUAGE_CHARS.sub("", words[0].lower()) if words else ""


class _Renderer(RendererHTML):
    """markdown-it's HTML renderer with render.js's rules for links, images, code and tables."""

    def link_open(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return _anchor(str(tokens[idx].attrGet("href") or ""))

    def image(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        src = str(token.attrGet("src") or "")
        alt = self.renderInlineAsText(token.children or [], options, env)
        return f"{_anchor(src)}{escape(alt or src or 'image')}</a>"

    def fence(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        token = tokens[idx]
        lang = language_name(token.info)
        code = token.content[:-1] if token.content.endswith("\n") else token.content
        return _code_block(code, lang)

    def code_block(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        code = tokens[idx].content
        return _code_block(code[:-1] if code.endswith("\n") else code, "")

    def s_open(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return "<del>"

    def s_close(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return "</del>"

    def th_open(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return _cell("th", tokens[idx])

    def td_open(self, tokens: list[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
        return _cell("td", tokens[idx])


def _anchor(href: str) -> str:
    """A link's opening tag: a new tab without access to the page, or no href when unsafe."""
    safe = safe_url(href)
    if safe is None:
        return "<a>"
    return f'<a href="{escape(safe)}" rel="noopener noreferrer" target="_blank">'


def _cell(tag: str, token: Token) -> str:
    # marked writes a column's alignment as align="…"; a style attribute would be refused by
    # the page's Content-Security-Policy anyway.
    match = _ALIGN.search(str(token.attrGet("style") or ""))
    return f'<{tag} align="{match.group(1)}">' if match else f"<{tag}>"


# Pygments' token types as highlight.js names the same things (its CSS classes, which the page's
# code colour stylesheets style); the most specific type listed wins, anything else is plain.
_HLJS_CLASSES: dict[_TokenType, str] = {
    Keyword: "hljs-keyword",
    Keyword.Constant: "hljs-literal",
    Keyword.Type: "hljs-type",
    Operator.Word: "hljs-keyword",
    Name.Builtin: "hljs-built_in",
    Name.Builtin.Pseudo: "hljs-variable language_",
    Name.Function: "hljs-title function_",
    Name.Class: "hljs-title class_",
    Name.Decorator: "hljs-meta",
    Name.Tag: "hljs-name",
    Name.Attribute: "hljs-attr",
    Name.Variable: "hljs-variable",
    Name.Constant: "hljs-variable constant_",
    String: "hljs-string",
    String.Escape: "hljs-char escape_",
    String.Regex: "hljs-regexp",
    String.Interpol: "hljs-subst",
    Number: "hljs-number",
    Comment: "hljs-comment",
    Comment.Preproc: "hljs-meta",
    Generic.Deleted: "hljs-deletion",
    Generic.Inserted: "hljs-addition",
    Generic.Heading: "hljs-section",
    Generic.Subheading: "hljs-section",
    Generic.Emph: "hljs-emphasis",
    Generic.Strong: "hljs-strong",
}


def _hljs_class(ttype: _TokenType) -> str | None:
    while ttype is not None:
        if ttype in _HLJS_CLASSES:
            return _HLJS_CLASSES[ttype]
        ttype = ttype.parent
    return None


def colour_code(code: str, lang: str) -> str | None:
    """`code` as escaped HTML with highlight.js's class names, or None when Pygments has no
    lexer for `lang`. The text is kept exactly (no newline added or stripped, tabs as they are)."""
    if not lang:
        return None
    try:
        lexer = get_lexer_by_name(lang, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None
    runs: list[tuple[str | None, str]] = []  # (class, text), neighbours of one class joined
    for ttype, value in lexer.get_tokens(code):
        cls = _hljs_class(ttype) if value.strip() else None
        if runs and runs[-1][0] == cls:
            runs[-1] = (cls, runs[-1][1] + value)
        else:
            runs.append((cls, value))
    return "".join(
        f'<span class="{cls}">{escape(text, quote=False)}</span>'
        if cls
        else escape(text, quote=False)
        for cls, text in runs
    )


def _code_block(code: str, lang: str) -> str:
    cls = f" language-{escape(lang)}" if lang else ""
    coloured = colour_code(code, lang)
    body = escape(code, quote=False) if coloured is None else coloured
    mark = "" if coloured is None else ' data-coloured="true"'
    return (
        '<div class="code-block"><div class="code-bar">'
        f'<span class="code-lang">{escape(lang or "text")}</span>'
        '<button type="button" class="copy-code" data-testid="copy-code" aria-label="Copy code">'
        "Copy</button></div>"
        f'<pre data-lang="{escape(lang)}"><code class="hljs{cls}"{mark}>{body}</code></pre>'
        "</div>\n"
    )


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": True}, renderer_cls=_Renderer)
    md.enable(["table", "strikethrough", "linkify"])
    # Every link is parsed as one; the renderer decides which hrefs are kept (as render.js
    # does after marked), so an unsafe link shows its text, not its Markdown source.
    md.validateLink = lambda url: True
    return md


_MD = _markdown()


def render_markdown(text: str) -> str:
    """Model text as sanitised HTML (see the module's docstring for the rules)."""
    html = _MD.render(text or "")
    return nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=set(SAFE_LINK_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
