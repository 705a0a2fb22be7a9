from django.urls import path

from shop import views

urlpatterns = [
    path("products/", views.products),
    path("products/<int:pk>/", views.product),
    path("buy/", views.buy),
    path("broken/", views.broken),
    path("secret/", views.secret),
    path("export/", views.export),
]
