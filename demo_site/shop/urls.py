from django.urls import path

from demo_site.shop import views

app_name = "shop"
urlpatterns = [
    path("", views.home, name="home"),
    path("products/", views.product_list, name="products"),
    path("products/<int:pk>/", views.product_detail, name="product"),
    path("recommendations/", views.recommendations, name="recommendations"),
    path("checkout/", views.checkout, name="checkout"),
    path("report/", views.sales_report, name="report"),
    path("api/products/", views.api_products, name="api-products"),
]
