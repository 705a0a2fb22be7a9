"""The shop's seed data: a few categories, a few dozen products, a few reviews each.

Deterministic (one seeded ``random.Random``), so every fresh demo looks the same.
"""

from __future__ import annotations

import random
from decimal import Decimal

from django.db import transaction

from demo_site.shop.models import Category, Product, Review

CATALOGUE = {
    "Espresso": ("Ristretto", "Lungo", "Doppio", "Crema", "Napoli", "Milano", "Torino", "Roma"),
    "Filter coffee": ("Kenya AA", "Yirgacheffe", "Huila", "Sidamo", "Antigua", "Cerrado"),
    "Tea": ("Darjeeling", "Assam", "Sencha", "Gyokuro", "Oolong", "Rooibos", "Earl Grey"),
    "Brewing gear": ("Pour-over cone", "Moka pot", "French press", "Hand grinder", "Kettle"),
    "Cups and mugs": ("Espresso cup", "Cappuccino cup", "Travel mug", "Glass mug", "Teacup"),
}
AUTHORS = ("Ada", "Brian", "Chloé", "Dmitri", "Emeka", "Fatima", "Grace", "Hiro", "Ines")
REMARKS = (
    "Exactly as described.",
    "Would buy again.",
    "A bit pricey, but worth it.",
    "Arrived quickly.",
    "Not my taste.",
    "My new favourite.",
)
RANDOM_SEED = 2013


@transaction.atomic
def seed_shop(*, reset: bool = False) -> int:
    """Fill an empty catalogue (or a ``reset`` one); return how many products it holds."""
    if reset:
        Category.objects.all().delete()
    if Product.objects.exists():
        return Product.objects.count()
    rng = random.Random(RANDOM_SEED)
    products = []
    for category_name, names in CATALOGUE.items():
        category = Category.objects.create(name=category_name)
        for name in names:
            products.append(
                Product(
                    name=name,
                    category=category,
                    price=Decimal(rng.randrange(450, 4500)) / 100,
                    description=f"{name}, from our {category_name.lower()} range.",
                )
            )
    Product.objects.bulk_create(products)
    Review.objects.bulk_create(
        Review(
            product=product,
            author=rng.choice(AUTHORS),
            rating=rng.randint(2, 5),
            text=rng.choice(REMARKS),
        )
        for product in Product.objects.all()
        for _ in range(rng.randint(1, 6))
    )
    return len(products)
