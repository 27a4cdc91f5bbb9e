from django.db import migrations

# SQLite's substring search: an FTS5 trigram index over search_text, kept by
# triggers so every write path (bulk inserts included) keeps it. A LIKE on the
# column itself reads every row; this reads the rows holding the text's trigrams.
# A migration that rebuilds inventory_resource on SQLite drops these triggers:
# tests/inventory/test_search.py fails then, and the migration must recreate them.
CREATE = [
    "CREATE VIRTUAL TABLE inventory_resource_fts USING fts5("
    "search_text, content='inventory_resource', content_rowid='id', tokenize='trigram')",
    "CREATE TRIGGER inventory_resource_fts_insert AFTER INSERT ON inventory_resource BEGIN"
    " INSERT INTO inventory_resource_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER inventory_resource_fts_delete AFTER DELETE ON inventory_resource BEGIN"
    " INSERT INTO inventory_resource_fts(inventory_resource_fts, rowid, search_text)"
    " VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER inventory_resource_fts_update AFTER UPDATE ON inventory_resource BEGIN"
    " INSERT INTO inventory_resource_fts(inventory_resource_fts, rowid, search_text)"
    " VALUES ('delete', old.id, old.search_text);"
    " INSERT INTO inventory_resource_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "INSERT INTO inventory_resource_fts(inventory_resource_fts) VALUES ('rebuild')",
]
DROP = [
    "DROP TRIGGER IF EXISTS inventory_resource_fts_insert",
    "DROP TRIGGER IF EXISTS inventory_resource_fts_delete",
    "DROP TRIGGER IF EXISTS inventory_resource_fts_update",
    "DROP TABLE IF EXISTS inventory_resource_fts",
]


def create_fts(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in CREATE:
            schema_editor.execute(statement)


def drop_fts(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        for statement in DROP:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("inventory", "0003_resource_search_text")]

    operations = [migrations.RunPython(create_fts, drop_fts)]
