"""The active branch read from the tree's shape, then only its own rows; indexed full-text search."""

from __future__ import annotations

import re

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from chat.conversations import lifecycle, search, tree
from chat.models import Conversation, Message
from chat.replies import planning

pytestmark = pytest.mark.django_db
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="full-text search and its indexes are PostgreSQL's"
)


def say(conversation, role: str, text: str, parent=None, **fields) -> Message:
    return Message.objects.create(
        conversation=conversation,
        role=role,
        parent=parent,
        content=[{"type": "text", "text": text}],
        **fields,
    )


def set_leaf(conversation, message: Message) -> None:
    conversation.leaf = message
    conversation.save(update_fields=["leaf"])


@pytest.fixture
def branched(conversation):
    """u1 → a1 → u2 → a2 (the active branch) and u1 → a1b → u3 → a3 (a newer regeneration)."""
    u1 = say(conversation, "user", "first question", token_count=3)
    a1 = say(conversation, "assistant", "first answer", u1, token_count=4, stop_reason="end_turn")
    a1b = say(conversation, "assistant", "another first answer", u1, token_count=5)
    u2 = say(conversation, "user", "second question", a1)
    a2 = say(conversation, "assistant", "second answer", u2, status=Message.Status.INTERRUPTED)
    u3 = say(conversation, "user", "third question", a1b)
    a3 = say(conversation, "assistant", "third answer", u3)
    set_leaf(conversation, a2)
    return {"u1": u1, "a1": a1, "a1b": a1b, "u2": u2, "a2": a2, "u3": u3, "a3": a3}


def asked_for(sql: str) -> set[int]:
    """The message ids a query reads, by `id IN (...)` or by an id range."""
    listed = re.search(r'"id" IN \(([^)]*)\)', sql)
    if listed:
        return {int(x) for x in listed[1].split(",")}
    low = re.search(r'"id" >= (\d+)', sql)
    high = re.search(r'"id" <= (\d+)', sql)
    assert low and high, sql
    return set(range(int(low[1]), int(high[1]) + 1))


def test_active_path_follows_the_leaf_with_whole_messages_and_their_versions(
    conversation, branched
):
    b = branched
    path = tree.active_path(conversation)
    assert [m.pk for m in path.messages] == [b["u1"].pk, b["a1"].pk, b["u2"].pk, b["a2"].pk]
    assert [m.text for m in path.messages] == [
        "first question",
        "first answer",
        "second question",
        "second answer",
    ]
    first, reply, _, last = path.messages
    assert (first.token_count, reply.token_count, reply.stop_reason) == (3, 4, "end_turn")
    assert last.status == Message.Status.INTERRUPTED and last.parent_id == b["u2"].pk
    assert path.versions == {
        b["u1"].pk: [b["u1"].pk],
        b["a1"].pk: [b["a1"].pk, b["a1b"].pk],
        b["u2"].pk: [b["u2"].pk],
        b["a2"].pk: [b["a2"].pk],
    }

    upto = tree.active_path(conversation, upto_id=b["u3"].pk)
    assert [m.pk for m in upto.messages] == [b["u1"].pk, b["a1b"].pk, b["u3"].pk]
    assert upto.versions[b["a1b"].pk] == [b["a1"].pk, b["a1b"].pk]

    conversation.leaf = None  # no leaf yet: the newest message's branch
    assert [m.text for m in tree.active_path(conversation).messages][-1] == "third answer"


def test_an_empty_conversation_has_an_empty_path(conversation):
    with CaptureQueriesContext(connection) as queries:
        path = tree.active_path(conversation)
    assert (path.messages, path.versions) == ([], {})
    assert len(queries) == 1


def test_the_tree_is_walked_without_content_and_only_the_path_is_read_whole(conversation, branched):
    b = branched
    with CaptureQueriesContext(connection) as queries:
        tree.active_path(conversation)
    tree_sql, rows_sql = (q["sql"] for q in queries.captured_queries)
    assert '"content"' not in tree_sql and '"parent_id"' in tree_sql
    assert '"content"' in rows_sql
    assert asked_for(rows_sql) == {b["u1"].pk, b["a1"].pk, b["u2"].pk, b["a2"].pk}


def test_a_page_reads_whole_only_its_own_messages(conversation):
    parent = None
    made = []
    for i in range(120):
        parent = say(conversation, "user" if i % 2 == 0 else "assistant", f"message {i}", parent)
        made.append(parent)
    set_leaf(conversation, parent)
    with CaptureQueriesContext(connection) as queries:
        page = tree.path_page(conversation, before_id=made[-50].pk, limit=50)
    assert [m["id"] for m in page.messages] == [m.pk for m in made[20:70]]
    assert page.has_more is True
    first = page.messages[0]
    assert (first["text"], first["versions"]) == ("message 20", [made[20].pk])
    whole = [q["sql"] for q in queries.captured_queries if '"content"' in q["sql"]]
    assert len(queries) == 3 and len(whole) == 1
    assert asked_for(whole[0]) == {m.pk for m in made[20:70]}
    assert " IN (" not in whole[0]  # one branch: an id range, not a list of ids


def test_switching_to_an_older_version_picks_its_newest_branch(conversation, branched):
    b = branched
    assert tree.latest_leaf_under(conversation, b["a1b"].pk) == b["a3"].pk
    assert tree.latest_leaf_under(conversation, b["a1"].pk) == b["a2"].pk
    assert tree.latest_leaf_under(conversation, b["a3"].pk) == b["a3"].pk


# --- search ------------------------------------------------------------------------------------


def found(user, query: str, **kwargs) -> list[int]:
    return [c.pk for c in search.search_conversations(user, query, **kwargs)]


def test_search_finds_message_text_and_titles_of_own_live_conversations(alice, bob):
    trip = lifecycle.conversation_create(owner=alice)
    say(trip, "user", "Where should we stay?")
    Conversation.objects.filter(pk=trip.pk).update(title="Trip to Lisbon")
    empty = lifecycle.conversation_create(owner=alice)
    Conversation.objects.filter(pk=empty.pk).update(title="Lisbon, never written in")
    bread = lifecycle.conversation_create(owner=alice)
    say(bread, "user", "How do I bake sourdough bread?")
    say(bread, "assistant", "Feed the starter the night before.")
    shelved = lifecycle.conversation_create(owner=alice)
    say(shelved, "user", "sourdough, archived")
    Conversation.objects.filter(pk=shelved.pk).update(archived=True)
    gone = lifecycle.conversation_create(owner=alice)
    say(gone, "user", "sourdough in a deleted conversation")
    Conversation.objects.filter(pk=gone.pk).update(title="Lisbon, deleted")
    lifecycle.conversation_trash(conversation=gone)
    theirs = lifecycle.conversation_create(owner=bob)
    say(theirs, "user", "sourdough from bob")

    assert set(found(alice, "sourdough")) == {bread.pk, shelved.pk}
    assert found(alice, "sourdough", archived=False) == [bread.pk]
    assert found(alice, "starter") == [bread.pk]
    assert found(alice, "lisbon") == [trip.pk]  # not the empty one: the list hides it
    assert found(alice, "Lisb") == [trip.pk]  # part of a title word: a substring match
    assert found(alice, "   ") == []
    assert found(bob, "lisbon") == []


@postgresql_only
def test_search_reads_words_after_line_breaks_and_only_text_blocks(alice):
    notes = lifecycle.conversation_create(owner=alice)
    say(notes, "assistant", "Feed the starter.\n\nKnead the dough\tgently.")
    tool = lifecycle.conversation_create(owner=alice)
    Message.objects.create(
        conversation=tool,
        role="assistant",
        content=[{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "walrus"}}],
    )
    assert found(alice, "knead") == [notes.pk]  # the first word of a paragraph
    assert found(alice, "gently") == [notes.pk]  # after a tab
    assert found(alice, "kneading dough") == [notes.pk]  # stemmed, every word
    assert found(alice, "walrus") == []


@postgresql_only
def test_search_expressions_are_the_indexed_ones(alice):
    """The query's tsvector expressions match migration 0006's indexes, so the indexes are used."""
    from django.contrib.postgres.search import SearchQuery

    terms = SearchQuery("sourdough", search_type="websearch", config=search.SEARCH_CONFIG)
    messages = Message.objects.alias(doc=search.message_text_doc()).filter(doc=terms)
    titles = Conversation.objects.alias(doc=search.title_doc()).filter(doc=terms)
    plans = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        for name, rows in (("message_text_search", messages), ("title", titles)):
            sql, params = rows.values("pk").query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plans[name] = "\n".join(row[0] for row in cursor.fetchall())
    assert "Bitmap Index Scan on message_text_search" in plans["message_text_search"]
    assert "Bitmap Index Scan on conversation_title_search" in plans["title"]


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_index_migration_rebuilds_an_index_an_interrupted_build_left_invalid():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("chat.migrations.0006_search_indexes")

    def validity() -> dict[str, bool]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY(%s)",
                [list(migration.INDEXES)],
            )
            return dict(cursor.fetchall())

    assert validity() == {name: True for name in migration.INDEXES}
    with connection.cursor() as cursor:  # what a CREATE INDEX CONCURRENTLY cut short leaves
        cursor.execute(
            "UPDATE pg_index SET indisvalid = false "
            "WHERE indexrelid = 'conversation_title_search'::regclass"
        )
    assert validity()["conversation_title_search"] is False
    with connection.schema_editor(atomic=False) as editor:
        migration.create(apps, editor)
    assert validity() == {name: True for name in migration.INDEXES}


def test_planning_reads_only_the_turns_after_the_stored_summary(conversation):
    chain, parent = [], None
    for n in range(6):
        parent = say(conversation, "user" if n % 2 == 0 else "assistant", f"turn {n}", parent)
        chain.append(parent)
    reply = say(conversation, "assistant", "", say(conversation, "user", "now", parent))
    conversation.summary, conversation.summary_upto_id = "What came before.", chain[3].pk
    conversation.save(update_fields=["summary", "summary_upto_id"])
    with CaptureQueriesContext(connection) as queries:
        plan = planning.plan_turn(conversation_id=conversation.pk, reply_message_id=reply.pk)
    # The path's rows (the reply itself is read on its own, by `"id" = `).
    rows = [q["sql"] for q in queries if '"content"' in q["sql"] and '"id" = ' not in q["sql"]]
    read = set().union(*(asked_for(sql) for sql in rows if '"chat_message"' in sql))
    assert read >= {chain[4].pk, chain[5].pk, reply.parent_id}
    assert not read & {m.pk for m in chain[:4]}  # the summarised turns are not read
    sent = str(plan.history)
    assert "What came before." in sent + str(plan.system)
    assert "turn 3" not in sent and "turn 4" in sent
