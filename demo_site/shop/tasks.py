"""The shop's Celery tasks: the order confirmation sent at every checkout.

It renders the confirmation mail with the customer's recent orders, and that list reads
each order's product with a query of its own: the N+1 pattern, on purpose, as the product
list does. ``send_confirmation_fixed`` (checkout with ``?fixed=1``) reads them in one.
"""

from __future__ import annotations

from django.template.loader import render_to_string

from demo_site.shop.models import Order
from demo_site.worker import app

RECENT_ORDERS = 10


@app.task(name="shop.send_confirmation")
def send_confirmation(order_id: int) -> int:
    """Render order ``order_id``'s confirmation (an N+1 over the recent orders)."""
    return render_confirmation(order_id, fixed=False)


@app.task(name="shop.send_confirmation_fixed")
def send_confirmation_fixed(order_id: int) -> int:
    """The same confirmation, its recent orders read in one query."""
    return render_confirmation(order_id, fixed=True)


def render_confirmation(order_id: int, *, fixed: bool) -> int:
    """Render the mail (nothing is sent: this is a demo) and return its length."""
    order = Order.objects.select_related("product").get(pk=order_id)
    recent = Order.objects.order_by("-pk")
    if fixed:
        recent = recent.select_related("product")
    context = {"order": order, "recent": recent[:RECENT_ORDERS]}
    return len(render_to_string("shop/confirmation.txt", context))
