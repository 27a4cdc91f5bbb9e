# The keyed MAC chain: new columns beside the legacy hash ones, which 0003
# reads to carry the existing chain over and 0004 drops.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0001_initial'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name='auditevent',
            name='actor',
            field=models.ForeignKey(blank=True, db_constraint=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='seq',
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='prev_mac',
            field=models.CharField(blank=True, default='', max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='auditevent',
            name='mac',
            field=models.CharField(blank=True, default='', max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='auditchainhead',
            name='last_seq',
            field=models.PositiveBigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name='auditchainhead',
            name='last_mac',
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.CreateModel(
            name='AuditCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('seq', models.PositiveBigIntegerField()),
                ('mac', models.CharField(blank=True, max_length=64)),
                ('count', models.PositiveBigIntegerField()),
                ('at', models.DateTimeField()),
                ('key', models.CharField(max_length=64)),
                ('signature', models.CharField(max_length=128)),
                ('written', models.BooleanField(default=True, help_text='false when nothing changed since the previous line')),
                ('verified_at', models.DateTimeField()),
                ('ok', models.BooleanField()),
                ('problem', models.TextField(blank=True)),
                ('first_bad_seq', models.PositiveBigIntegerField(blank=True, null=True)),
                ('checked', models.PositiveBigIntegerField(default=0)),
                ('checkpoints_checked', models.PositiveIntegerField(default=0)),
                ('unsealed', models.PositiveBigIntegerField(default=0)),
                ('oldest_unsealed_at', models.DateTimeField(blank=True, null=True)),
                ('webhook_error', models.TextField(blank=True)),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
    ]
