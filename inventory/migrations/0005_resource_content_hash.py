from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0004_resource_search_fts"),
    ]

    # Nullable with no default: SQLite adds the column in place instead of rebuilding the table,
    # which would drop the search triggers of 0004. Existing rows stay null (unknown) until an
    # apply or a save fills them in.
    operations = [
        migrations.AddField(
            model_name="resource",
            name="content_hash",
            field=models.CharField(blank=True, editable=False, max_length=32, null=True),
        ),
    ]
