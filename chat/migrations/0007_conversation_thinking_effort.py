from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0006_search_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="thinking_effort",
            field=models.CharField(blank=True, default="", max_length=8),
        ),
    ]
