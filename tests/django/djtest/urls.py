from django.urls import include, path, re_path

from djtest import api, views, why_slow

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
    path("atomic/", views.atomic_count),
    path("stream-queries/", views.stream_with_queries),
    path("async/items/", views.async_items),
    path("slow/async/", views.async_slow),
    path("create/", views.create_shelf),
    path("pid/", views.pid),
    path("health/", views.health),
    path("early/", views.home),
    path("sabotage/", views.home),
    path("shop/<str:region>/", include(shop)),
    path("why/nested/", why_slow.nested),
    path("why/cached/", why_slow.cached),
    path("why/view/", why_slow.repeat_in_view),
    path("why/helper/", why_slow.repeat_in_helper),
    path("why/tag/", why_slow.repeat_in_tag),
    path("why/template/", why_slow.repeat_in_template),
    path("why/jinja/", why_slow.jinja),
    path("why/upstream/", why_slow.upstream),
    # Regex routes: a REST framework router (format suffixes), nested, and re_path.
    path("api/", include(api.router.urls)),
    path("api/v2/", include([path("shop/", include(api.nested.urls))])),
    re_path(r"^legacy/(?P<slug>[a-z]+)/$", api.legacy),
    re_path(r"^archive/(\d{4})/(\d{2})/?$", api.legacy),
    re_path(r"^files/(?:(?P<folder>[a-z]+)/)?(?P<name>[\w.-]+)\Z", api.legacy),
]
