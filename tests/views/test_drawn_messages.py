"""The saved messages the chat page draws itself: which pages, and the replies' HTML rules."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path

import pytest
from django.core.cache import cache
from django.urls import reverse

from chat.models import Message
from chat.views import drawn, markdown
from chat.views.markdown import render_markdown

STATIC = Path(__file__).resolve().parents[2] / "static" / "chat"

# Hostile Markdown and HTML a reply may hold (tests/e2e/test_xss_browser.py runs them in Chromium).
HOSTILE = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "<svg onload=alert(1)>",
    '<a href="javascript:alert(1)">a</a>',
    "[md](javascript:alert(1))",
    "[md](JaVaScRiPt:alert(1))",
    "[md](&#x6A;avascript:alert(1))",
    "[md](data:text/html,<script>alert(1)</script>)",
    "[md](vbscript:msgbox(1))",
    '![img](x" onerror="alert(1))',
    "![img](javascript:alert(1))",
    "[ref][r]\n\n[r]: javascript:alert(1)",
    '<https://example.com/"onmouseover="alert(1)>',
    "```html\n<script>alert(1)</script>\n```",
    "`<img src=x onerror=alert(1)>`",
    '<div style="background:url(javascript:alert(1))">css</div>',
    '<iframe srcdoc="<script>alert(1)</script>"></iframe>',
    '```"><script>alert(1)</script>\nx\n```',
    "| a |\n| --- |\n| <script>alert(1)</script> |",
    "<!-- <script>alert(1)</script> -->",
]
TAG = re.compile(r"<\s*(/?)\s*([a-zA-Z0-9]+)([^>]*)>")
ALLOWED_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "hr", "br", "em",
    "strong", "del", "code", "pre", "a", "table", "thead", "tbody", "tr", "th", "td", "div",
    "span", "button",
}  # fmt: skip


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_comes_out_with_no_script_handler_or_unsafe_url(text):
    html = render_markdown(text)
    for _close, name, attrs in TAG.findall(html):
        assert name.lower() in ALLOWED_TAGS, html
        assert not re.search(r"\son\w+\s*=", attrs, re.I), html
        assert "style=" not in attrs.lower() and "src=" not in attrs.lower(), html
        for href in re.findall(r'href="([^"]*)"', attrs):
            assert re.match(r"(https?://|mailto:)", href), html


def test_html_the_model_writes_shows_as_typed():
    html = render_markdown("Use <b>bold</b> here.\n\n<div>block</div>")
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>" not in html
    assert "<p>&lt;div&gt;block&lt;/div&gt;</p>" in html


def test_links_keep_safe_hrefs_and_open_in_a_new_tab():
    html = render_markdown("[docs](https://example.com/a?b=1&c=2) and www.example.org")
    assert (
        '<a href="https://example.com/a?b=1&amp;c=2" target="_blank" rel="noopener noreferrer">docs</a>'
        in html
    )
    assert '<a href="http://www.example.org"' in html


def test_an_unsafe_or_relative_link_keeps_its_text_without_an_href():
    for href in ("javascript:alert(1)", "/admin/", "data:text/html,x", "//evil.example/"):
        html = render_markdown(f"[the text]({href})")
        assert ">the text</a>" in html and "href" not in html, html


def test_images_become_links_to_them():
    html = render_markdown("![a chart](https://example.com/c.png)")
    assert "<img" not in html
    assert '<a href="https://example.com/c.png" target="_blank"' in html and ">a chart</a>" in html


def test_code_blocks_carry_their_language_and_a_copy_button_with_the_code_escaped():
    html = render_markdown("```Python {linenos}\nif a < b and c > d:\n    pass\n```")
    assert '<span class="code-lang">python</span>' in html
    assert (
        '<pre data-lang="python"><code class="hljs language-python" data-coloured="true">' in html
    )
    assert "&lt;" in html and "&gt;" in html and "a < b" not in html
    assert 'class="copy-code"' in html and 'aria-label="Copy code"' in html
    plain = render_markdown("```\n<plain>\n```")
    assert '<span class="code-lang">text</span>' in plain
    assert '<code class="hljs">&lt;plain&gt;</code>' in plain


def test_tables_lists_and_strikethrough_follow_github_markdown():
    html = render_markdown("| a | b |\n|:--|--:|\n| 1 | 2 |\n\n3. three\n4. four\n\n~~gone~~")
    assert '<th align="left">a</th>' in html and '<td align="right">2</td>' in html
    assert '<ol start="3">' in html
    assert "<del>gone</del>" in html


def message(role="assistant", text="Hello", **fields):
    content = fields.pop("content", [{"type": "text", "text": text}])
    return {"id": 1, "role": role, "text": text, "content": content, "status": "done",
            "stop_reason": "end_turn", **fields}  # fmt: skip


@pytest.mark.parametrize(
    "odd",
    [
        message(text="Euler: $e^{i\\pi} + 1 = 0$"),
        message(status="error"),
        message(status="streaming"),
        message(stop_reason="max_tokens"),
        message(role="user", content=[{"type": "thinking", "thinking": "hm"}]),
        message(content=[{"type": "text", "text": "x", "citations": [{"type": "x"}]}]),
        message(content=[{"type": "server_tool_use", "id": "t", "name": "web_search"}]),
        message(role="user", content=[{"type": "image", "source": {}}]),
    ],
    ids=["math", "error", "streaming", "truncated", "user-thinking", "citations", "tool", "image"],
)
def test_a_page_with_any_message_the_script_must_draw_is_drawn_by_the_script(odd):
    assert drawn.page_messages([message(role="user"), message(id=2)]) is not None
    assert drawn.page_messages([message(role="user"), odd]) is None


def test_user_text_with_dollars_is_drawn_as_text():
    (drawn_user,) = drawn.page_messages([message(role="user", text="Is $5 or $10 better?")])
    assert drawn_user["text"] == "Is $5 or $10 better?" and drawn_user["html"] is None


@pytest.mark.django_db
def test_the_page_carries_its_drawn_messages_escaped_and_sanitised(client, alice, conversation):
    asked = Message.objects.create(
        conversation=conversation,
        role="user",
        content=[{"type": "text", "text": "<b>hi</b> & bye"}],
    )
    Message.objects.create(
        conversation=conversation,
        parent=asked,
        role="assistant",
        content=[{"type": "text", "text": "# Title\n\n<script>alert(1)</script>"}],
    )
    client.force_login(alice)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    assert html.count("data-drawn") == 2
    assert (
        '<div class="message-body plain" data-testid="message-body">&lt;b&gt;hi&lt;/b&gt; &amp; bye</div>'
        in html
    )
    assert "<h1>Title</h1>" in html and "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>" in html
    assert "<script>alert(1)" not in html


@pytest.mark.django_db
def test_a_page_the_script_draws_carries_no_drawn_messages(client, alice, conversation):
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=[{"type": "text", "text": "$$x^2$$"}],
    )
    client.force_login(alice)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    assert "data-drawn" not in html and 'class="messages-end"' not in html


def test_a_replys_thinking_is_drawn_as_the_closed_panel_the_script_would_show():
    content = [
        {"type": "thinking", "thinking": "First <idea>"},
        {"type": "redacted_thinking"},
        {"type": "thinking", "thinking": "Second"},
        {"type": "text", "text": "Answer"},
    ]
    (reply,) = drawn.page_messages([message(text="Answer", content=content)])
    assert reply["thinking"] == "First <idea>\n\nSecond" and reply["thinking_redacted"]


@pytest.mark.django_db
def test_the_thinking_panel_is_drawn_closed_with_its_text_escaped(client, alice, conversation):
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content=[
            {"type": "thinking", "thinking": "<b>plan</b>", "signature": "sig"},
            {"type": "text", "text": "Done."},
        ],
    )
    client.force_login(alice)
    html = client.get(reverse("chat:conversation", args=[conversation.pk])).content.decode()
    assert 'aria-expanded="false">Thinking</button>' in html
    assert (
        '<div class="thinking-text" data-testid="thinking-text">&lt;b&gt;plan&lt;/b&gt;</div>'
        in html
    )
    assert "sig" not in html.split('id="chat-config"')[0]


def test_code_in_a_known_language_is_coloured_with_highlight_js_class_names_its_text_kept():
    code = 'def total(rows):\n\treturn sum(r["a<b"] for r in rows)  # &\n'
    html = render_markdown(f"```python\n{code}```")
    assert 'data-coloured="true"' in html
    assert '<span class="hljs-keyword">def</span>' in html
    assert '<span class="hljs-title function_">total</span>' in html
    assert '<span class="hljs-comment"># &amp;</span>' in html
    inner = re.search(r"<code[^>]*>(.*)</code>", html, re.S).group(1)
    assert unescape(re.sub(r"<[^>]+>", "", inner)) == code.removesuffix("\n")


def test_code_in_a_language_pygments_does_not_know_is_left_for_the_page_to_colour():
    html = render_markdown("```no-such-language\nx = 1\n```\n\n```\nplain\n```")
    assert "data-coloured" not in html and '<span class="hljs-' not in html


def test_a_replys_html_is_rendered_once_and_again_only_when_its_text_changes(monkeypatch):
    cache.clear()
    rendered = []
    render = drawn.render_markdown
    monkeypatch.setattr(
        drawn, "render_markdown", lambda text: rendered.append(text) or render(text)
    )
    page = [message(role="user", text="Hi"), message(id=2, text="**One**")]
    first = drawn.page_messages(page)
    assert drawn.page_messages(page) == first and rendered == ["**One**"]
    continued = [page[0], message(id=2, text="**One** and two")]  # a Continue grew it
    assert "and two" in drawn.page_messages(continued)[1]["html"]
    assert rendered == ["**One**", "**One** and two"]


def test_the_server_and_the_page_name_the_same_stop_notes_and_math_pattern():
    """Which messages the page notes (STOP_NOTES) and what it takes for a formula (MATH_HINT)
    are written in messages.js and render.js; the server must decide as they do."""
    messages_js = (STATIC / "messages.js").read_text()
    notes = re.search(r"const STOP_NOTES = \{(.*?)\};", messages_js, re.S).group(1)
    assert set(re.findall(r"^\s*(\w+):", notes, re.M)) == drawn.NOTED_STOP_REASONS
    render_js = (STATIC / "render.js").read_text()
    hint = re.search(r"const MATH_HINT = /(.*)/;", render_js).group(1)
    assert hint == markdown._MATH_HINT.pattern
