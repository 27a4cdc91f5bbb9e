from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_role_resource"),
    ]

    operations = [
        migrations.AddField(
            model_name="user",
            name="external_id",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                condition=~Q(external_id=""), fields=("external_id",), name="user_external_id_unique"
            ),
        ),
    ]
