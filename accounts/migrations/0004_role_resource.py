import django.db.models.deletion
from django.db import migrations, models


def _matches(resource, kinds, labels) -> bool:
    # The selector rule as it stood when this migration was written (Resource.matches).
    if resource.kind not in (kinds or []):
        return False
    for key, values in (labels or {}).items():
        if key not in resource.labels:
            return False
        if "*" not in values and resource.labels[key] not in values:
            return False
    return True


def fill_role_scopes(apps, schema_editor):
    Role = apps.get_model("accounts", "Role")
    Resource = apps.get_model("inventory", "Resource")
    RoleResource = apps.get_model("accounts", "RoleResource")
    roles = list(Role.objects.only("pk", "resource_kinds", "resource_labels"))
    if not roles:
        return
    rows = []
    for resource in Resource.objects.only("pk", "kind", "labels").order_by("pk").iterator(chunk_size=5000):
        rows += [
            RoleResource(role_id=role.pk, resource_id=resource.pk)
            for role in roles
            if _matches(resource, role.resource_kinds, role.resource_labels)
        ]
        if len(rows) >= 5000:
            RoleResource.objects.bulk_create(rows)
            rows = []
    RoleResource.objects.bulk_create(rows)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_capabilities"),
        ("inventory", "0003_resource_search_text"),
    ]

    operations = [
        migrations.CreateModel(
            name="RoleResource",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "role", "resource", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "resource",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="inventory.resource"
                    ),
                ),
                (
                    "role",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="accounts.role"
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["resource", "role"], name="role_resource_by_resource")],
            },
        ),
        migrations.RunPython(fill_role_scopes, migrations.RunPython.noop),
    ]
