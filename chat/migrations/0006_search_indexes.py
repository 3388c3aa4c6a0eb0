"""GIN indexes for the full-text search of the conversation list (PostgreSQL only).

Each index expression is exactly the one chat/conversations/search.py's message_text_doc /
title_doc put in the query; a different expression would not be used. Other databases search by
substring.

The indexes are built CONCURRENTLY (outside a transaction: the migration is not atomic), so
sends and replies keep writing messages while a large table is indexed (about 3 s per 25,000
messages here). A build that was interrupted leaves an invalid index behind; it is dropped and
built again.
"""

from django.db import migrations

INDEXES = {
    "message_text_search": (
        "chat_message",
        "to_tsvector('english'::regconfig, "
        "jsonb_path_query_array(content, '$[*] ? (@.type == \"text\").text'::jsonpath))",
    ),
    "conversation_title_search": (
        "chat_conversation",
        "to_tsvector('english'::regconfig, COALESCE(title, ''))",
    ),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, expression) in INDEXES.items():
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
                [name],
            )
            found = cursor.fetchone()
        if found is not None and found[0]:
            continue
        if found is not None:  # an interrupted concurrent build
            schema_editor.execute(f"DROP INDEX CONCURRENTLY {name}")
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY {name} ON {table} USING gin (({expression}))"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("chat", "0005_conversation_ui"),
    ]

    operations = [
        migrations.RunPython(create, drop),
    ]
