"""The demo site's URLs: the shop at the root."""

from django.urls import include, path

urlpatterns = [path("", include("demo_site.shop.urls"))]
