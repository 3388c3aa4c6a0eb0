"""GIN indexes for the full-text search of the conversation list (PostgreSQL only).

Each index expression is exactly the one selectors.message_text_doc / title_doc put in the
query; a different expression would not be used. Other databases search by substring.
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
        schema_editor.execute(f"CREATE INDEX {name} ON {table} USING gin (({expression}))")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0005_conversation_ui"),
    ]

    operations = [
        migrations.RunPython(create, drop),
    ]
