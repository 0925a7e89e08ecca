"""``manage.py seed_shop``: a small catalogue, a shipping country and the site's domain.

The catalogue includes one 4WS gift card for sale (``GIFTCARD``): a product of the
gift-card product class, which asks for the recipient's name, e-mail and message.

Idempotent: run it again and nothing is duplicated.
"""

from decimal import Decimal

from django.conf import settings
from django.contrib.sites.models import Site
from django.core.management.base import BaseCommand
from fourws_pay_oscar import selling
from oscar.core.loading import get_model

PRODUCTS = [
    ("4WS-MUG", "4WS espresso mug", Decimal("12.00")),
    ("4WS-BEANS", "Coffee beans, 1 kg", Decimal("25.00")),
    ("4WS-MOKA", "Moka pot, 6 cups", Decimal("30.00")),
    ("4WS-GRINDER", "Hand grinder", Decimal("65.00")),
]
GIFTCARD = ("4WS-GIFTCARD-25", "4WS gift card, 25 EUR", Decimal("25.00"))


class Command(BaseCommand):
    help = "Create the example catalogue (idempotent)."

    def handle(self, *args, **options):
        country_model = get_model("address", "Country")
        country_model.objects.update_or_create(
            iso_3166_1_a2="IT",
            defaults={
                "iso_3166_1_a3": "ITA",
                "iso_3166_1_numeric": "380",
                "printable_name": "Italy",
                "name": "Italy",
                "is_shipping_country": True,
            },
        )
        domain = settings.SHOP_PUBLIC_URL.split("://", 1)[-1]
        Site.objects.update_or_create(
            pk=settings.SITE_ID, defaults={"domain": domain, "name": settings.OSCAR_SHOP_NAME}
        )

        product_class, _ = get_model("catalogue", "ProductClass").objects.get_or_create(
            name="Coffee gear", defaults={"requires_shipping": True, "track_stock": True}
        )
        category_model = get_model("catalogue", "Category")
        category = category_model.objects.filter(name="Coffee").first()
        if category is None:
            category = category_model.add_root(name="Coffee", slug="coffee")
        partner, _ = get_model("partner", "Partner").objects.get_or_create(name="4WS demo")
        product_model = get_model("catalogue", "Product")
        stock_model = get_model("partner", "StockRecord")
        product_category = get_model("catalogue", "ProductCategory")
        giftcard_class = selling.setup_product_class()
        for upc, title, price in [*PRODUCTS, GIFTCARD]:
            product, _ = product_model.objects.update_or_create(
                upc=upc,
                defaults={
                    "title": title,
                    "product_class": giftcard_class if upc == GIFTCARD[0] else product_class,
                    "is_public": True,
                },
            )
            product_category.objects.get_or_create(product=product, category=category)
            stock_model.objects.update_or_create(
                product=product,
                partner=partner,
                defaults={
                    "partner_sku": upc,
                    "price_currency": settings.OSCAR_DEFAULT_CURRENCY,
                    "price": price,
                    "num_in_stock": 1000,
                },
            )
            self.stdout.write(f"{upc:<12} {price:>7} EUR  {product.get_absolute_url()}  {title}")
