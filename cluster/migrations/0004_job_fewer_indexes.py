"""Job indexes: only those its queries use, the state ones partial on open jobs (see Job.Meta)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('cluster', '0003_operator_permissions'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='job',
            name='job_owner_state',
        ),
        migrations.AlterField(
            model_name='job',
            name='owner_node',
            field=models.CharField(blank=True, default='', max_length=100),
        ),
        migrations.AlterField(
            model_name='job',
            name='routing_key',
            field=models.CharField(blank=True, default='', max_length=255),
        ),
        migrations.AlterField(
            model_name='job',
            name='state',
            field=models.CharField(choices=[('queued', 'queued'), ('running', 'running'), ('retrying', 'retrying'), ('succeeded', 'succeeded'), ('failed', 'failed'), ('requeued', 'requeued'), ('duplicate', 'duplicate')], default='queued', max_length=16),
        ),
        migrations.AlterField(
            model_name='job',
            name='task_name',
            field=models.CharField(max_length=200),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('state__in', ['queued', 'requeued', 'retrying', 'running'])), fields=['owner_node', 'state'], name='job_open_owner'),
        ),
        migrations.AddIndex(
            model_name='job',
            index=models.Index(condition=models.Q(('state__in', ['queued', 'requeued', 'retrying', 'running'])), fields=['state', 'updated_at'], name='job_open_state'),
        ),
    ]
