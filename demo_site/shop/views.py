"""The shop's pages, each showing something Zibrato finds (README.md, "See it run").

* ``products/``: an N+1 query pattern on purpose; ``?fixed=1`` shows the fix.
* ``products/<int:pk>/``: a well-behaved detail page (three queries).
* ``recommendations/``: slow, with variable latency and a long tail: it waits for the
  recommendation service (``demo_site.recommendations``, a real HTTP call).
* ``checkout/``: raises ``PaymentDeclined`` for one order in four; else sends the order
  confirmation task (an N+1 in the worker; ``?fixed=1`` sends its fixed twin).
* ``api/products/``: a JSON API, one query.
* ``report/``: timed and counted with the 2013 decorators.
"""

from __future__ import annotations

import random

import requests
from django import forms
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, F, QuerySet, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from demo_site.shop.models import Category, Order, Product
from demo_site.shop.tasks import send_confirmation, send_confirmation_fixed
from zibrato_django import zibrato

PAGE_SIZE = 24
DECLINE_RATE = 0.25
RECOMMENDED = 4
SERVICE_TIMEOUT = 2.5  # the service answers within 2 s
CATALOGUE_KEY = "shop:product-ids"
CATALOGUE_SECONDS = 300


class PaymentDeclined(Exception):
    """The pretend payment gateway said no."""


class CheckoutForm(forms.Form):
    product = forms.ModelChoiceField(queryset=Product.objects.all())
    quantity = forms.IntegerField(min_value=1, max_value=10, initial=1)


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "shop/home.html")


def product_list(request: HttpRequest) -> HttpResponse:
    """List products. The template reads each one's category and reviews: without
    ``?fixed=1`` that is two more queries per product (the N+1 pattern), with it two in all.
    """
    fixed = request.GET.get("fixed") == "1"
    products: QuerySet[Product] = Product.objects.all()
    if fixed:
        products = products.select_related("category").prefetch_related("reviews")
    context = {"products": products[:PAGE_SIZE], "fixed": fixed}
    return render(request, "shop/product_list.html", context)


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    product = get_object_or_404(Product.objects.select_related("category"), pk=pk)
    context = {
        "product": product,
        "reviews": product.reviews.order_by("-pk")[:10],
        "form": CheckoutForm(initial={"product": product}),
        "ordered": request.GET.get("ordered"),
    }
    return render(request, "shop/product_detail.html", context)


def recommendations(request: HttpRequest) -> HttpResponse:
    """Ask the recommendation service (slow, variable) for four products, then show them."""
    ids: list[int] = (
        cache.get_or_set(
            CATALOGUE_KEY,
            lambda: list(Product.objects.values_list("pk", flat=True)),
            CATALOGUE_SECONDS,
        )
        or []
    )
    try:
        answer = requests.get(
            f"{settings.RECOMMENDATIONS_URL}/recommendations",
            params={"count": RECOMMENDED, "among": len(ids)},
            timeout=SERVICE_TIMEOUT,
        )
        answer.raise_for_status()
        picks = [ids[index] for index in answer.json()["picks"] if 0 <= index < len(ids)]
    except (requests.RequestException, ValueError, KeyError, TypeError):
        picks = []  # the page still answers, without recommendations
    products = Product.objects.select_related("category").filter(pk__in=picks)
    return render(request, "shop/recommendations.html", {"products": products})


@require_POST
def checkout(request: HttpRequest) -> HttpResponse:
    """Place an order and send its confirmation to the worker (``?fixed=1``: the twin
    without the N+1); the payment gateway declines one in four, and the view raises."""
    form = CheckoutForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(form.errors.as_text())
    product = form.cleaned_data["product"]
    if random.random() < DECLINE_RATE:
        raise PaymentDeclined(f"card declined for {product}")
    order = Order.objects.create(product=product, quantity=form.cleaned_data["quantity"])
    confirm = send_confirmation_fixed if request.GET.get("fixed") == "1" else send_confirmation
    confirm.delay(order.pk)
    return redirect(f"{reverse('shop:product', args=[product.pk])}?ordered={order.pk}")


def api_products(request: HttpRequest) -> JsonResponse:
    """The catalogue as JSON, in one query."""
    products = Product.objects.values("id", "name", "price", category_name=F("category__name"))
    return JsonResponse({"products": list(products)})


@zibrato.time_me(level="info", name="shop.report.build")
def sales_by_category() -> list[Category]:
    """Orders and units sold per category: one aggregate query, timed the 2013 way."""
    return list(
        Category.objects.annotate(
            orders=Count("products__orders"),
            units=Sum("products__orders__quantity", default=0),
        )
    )


def sales_report(request: HttpRequest) -> HttpResponse:
    with zibrato.Count_me(level="info", name="shop.report.views"):
        rows = sales_by_category()
    return render(request, "shop/report.html", {"rows": rows})
