from django.urls import include, path

from djtest import views

shop = [
    path("shelves/<slug:slug>/", views.ShelfView.as_view(), name="shelf"),
]

urlpatterns = [
    path("", views.home),
    path("items/", views.items),
    path("items/<int:pk>/", views.item),
    path("shelves/", views.n_plus_one),
    path("bulk/", views.bulk),
    path("notes/", views.notes),
    path("slow/view/", views.slow),
    path("slow/boom/", views.slow_boom),
    path("fast/view/", views.slow),
    path("boom/", views.boom),
    path("denied/", views.denied),
    path("missing/", views.missing),
    path("suspicious/", views.suspicious),
    path("unavailable/", views.unavailable),
    path("get-only/", views.get_only),
    path("fail/after/", views.home),
    path("stream/", views.stream),
    path("async/items/", views.async_items),
    path("slow/async/", views.async_slow),
    path("create/", views.create_shelf),
    path("pid/", views.pid),
    path("health/", views.health),
    path("early/", views.home),
    path("sabotage/", views.home),
    path("shop/<str:region>/", include(shop)),
]
