from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404

from shop.models import Product


def products(request: HttpRequest) -> JsonResponse:
    names = [p.name for p in Product.objects.order_by("name")]
    return JsonResponse({"count": Product.objects.count(), "names": names})


def product(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(get_object_or_404(Product, pk=pk).name)


def buy(request: HttpRequest) -> HttpResponse:
    Product.objects.create(name=request.POST["name"], price=int(request.POST.get("price", 1)))
    return HttpResponse("bought", status=201)


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("broken on purpose")


def secret(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def export(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(f"{p.pk},{p.name}\n" for p in Product.objects.all())
