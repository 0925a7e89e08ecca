from typing import ClassVar

from django.db import migrations, models


class Migration(migrations.Migration):
    """The back office's permissions (an unmanaged model: no table is created)."""

    initial = True
    dependencies: ClassVar[list[tuple[str, str]]] = []

    operations: ClassVar[list[migrations.operations.base.Operation]] = [
        migrations.CreateModel(
            name="BackOfficeAccess",
            fields=[
                ("id", models.AutoField(primary_key=True, serialize=False, verbose_name="ID")),
            ],
            options={
                "managed": False,
                "default_permissions": (),
                "permissions": [
                    (
                        "view_backoffice",
                        "Can see the gift-card back office (cards, queue, report)",
                    ),
                    ("resolve_backoffice", "Can resolve gift-card operations in review"),
                    ("reveal_giftcard_number", "Can show a gift card's whole number"),
                ],
            },
        ),
    ]
