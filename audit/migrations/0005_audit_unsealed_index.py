from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0004_drop_legacy_hash_and_protect"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(condition=models.Q(("seq__isnull", True)), fields=["id"], name="audit_unsealed_idx"),
        ),
    ]
