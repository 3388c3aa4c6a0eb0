from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0007_conversation_thinking_effort"),
    ]

    operations = [
        migrations.AddField(
            model_name="attachment",
            name="kind",
            field=models.CharField(
                choices=[("image", "Image"), ("document", "Document")],
                default="image",
                max_length=16,
            ),
        ),
        migrations.AddField(
            model_name="attachment",
            name="page_count",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="attachment",
            name="has_text_layer",
            field=models.BooleanField(blank=True, null=True),
        ),
    ]
