from django.db import migrations


def create_gin_index(apps, schema_editor):
    # Label selectors on PostgreSQL use @> and ? on the JSONB column.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "CREATE INDEX IF NOT EXISTS resource_labels_gin ON inventory_resource USING gin (labels)"
        )


def drop_gin_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS resource_labels_gin")


class Migration(migrations.Migration):
    dependencies = [("inventory", "0001_initial")]

    operations = [migrations.RunPython(create_gin_index, drop_gin_index)]
