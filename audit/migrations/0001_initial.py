# The audit log moved here from requests_app. Its tables stay where they are
# (the models name them in db_table), so this only takes the models into this
# app's state; requests_app 0004 lets go of them. No row is copied or dropped.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        # The tables were created there; on a new database they must exist first.
        ('requests_app', '0003_drop_review_permission'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditChainHead',
                    fields=[
                        ('id', models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                        ('last_hash', models.CharField(blank=True, max_length=64)),
                        ('count', models.PositiveBigIntegerField(default=0)),
                    ],
                    options={
                        'db_table': 'requests_app_auditchainhead',
                    },
                ),
                migrations.CreateModel(
                    name='AuditEvent',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created_at', models.DateTimeField()),
                        ('actor_username', models.CharField(blank=True, max_length=150)),
                        ('action', models.CharField(max_length=64)),
                        ('target_type', models.CharField(blank=True, max_length=32)),
                        ('target_id', models.CharField(blank=True, max_length=64)),
                        ('data', models.JSONField(blank=True, default=dict)),
                        ('prev_hash', models.CharField(blank=True, max_length=64)),
                        ('hash', models.CharField(max_length=64, unique=True)),
                        ('actor', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'requests_app_auditevent',
                        'ordering': ['-id'],
                        'indexes': [
                            models.Index(fields=['target_type', 'target_id'], name='audit_target_idx'),
                            models.Index(fields=['action', '-id'], name='audit_action_idx'),
                            models.Index(fields=['actor_username', '-id'], name='audit_actor_idx'),
                            models.Index(fields=['created_at'], name='audit_created_idx'),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
