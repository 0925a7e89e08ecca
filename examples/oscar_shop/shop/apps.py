from django.apps import AppConfig


class ShopConfig(AppConfig):
    """The demo's own management commands (seed_shop, seed_giftcards)."""

    name = "shop"
    default_auto_field = "django.db.models.AutoField"
