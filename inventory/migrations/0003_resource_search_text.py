import django.db.models.functions.text
from django.db import migrations, models


def create_trigram_index(apps, schema_editor):
    # A substring search (LIKE '%web-00012%') reads this index instead of every
    # row. pg_trgm is a trusted extension: the database's owner may create it.
    # SQLite has no such index; a substring scan of one column is its floor.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS resource_search_trgm ON inventory_resource USING gin (search_text gin_trgm_ops)"
        )


def drop_trigram_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS resource_search_trgm")


class Migration(migrations.Migration):
    dependencies = [("inventory", "0002_resource_labels_gin")]

    operations = [
        migrations.AddField(
            model_name="resource",
            name="search_text",
            field=models.GeneratedField(
                db_persist=True,
                expression=django.db.models.functions.text.Lower(
                    django.db.models.functions.text.Concat(
                        "name",
                        models.Value("\n"),
                        "address",
                        models.Value("\n"),
                        "description",
                        output_field=models.TextField(),
                    )
                ),
                output_field=models.TextField(),
            ),
        ),
        migrations.RunPython(create_trigram_index, drop_trigram_index),
    ]
