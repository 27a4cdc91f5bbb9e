# The audit log is the audit app's now (audit 0001 took the models into its
# state over the same tables). This drops them from requests_app's state only:
# the tables and every row stay. The content types follow, so admin history
# and any permission on the models stay attached.

from django.db import migrations

MODELS = ("auditevent", "auditchainhead")


def content_types_to(app_label, *, source):
    def move(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        for model in MODELS:
            if not ContentType.objects.filter(app_label=app_label, model=model).exists():
                ContentType.objects.filter(app_label=source, model=model).update(app_label=app_label)

    return move


class Migration(migrations.Migration):

    dependencies = [
        ('requests_app', '0003_drop_review_permission'),
        ('audit', '0001_initial'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='AuditEvent'),
                migrations.DeleteModel(name='AuditChainHead'),
            ],
            database_operations=[],
        ),
        migrations.RunPython(
            content_types_to("audit", source="requests_app"),
            content_types_to("requests_app", source="audit"),
        ),
    ]
