"""The demo's traffic: a few simulated shoppers on the Django shop and the Flask warehouse.

::

    python -m demo_site.traffic --django http://127.0.0.1:8000 [--flask http://127.0.0.1:8001]
                                [--rate 20] [--seconds N]

Each shopper (a thread with its own HTTP session) picks pages at random, weighted like a
shop's traffic: the N+1 list often, the fixed one sometimes, the slow and the failing
pages now and then. It stops on SIGINT or SIGTERM, giving requests in flight half a second.

It also shows the plain client in a script: every response is counted in
``demo.traffic.requests`` (tags ``site`` and ``status``) by a ``Zibrato`` publishing to
``$ZIBRATO_PUBLISH``.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from zibrato import Zibrato
from zibrato.runner import stop_on_signals

SHOPPERS = 4
REQUEST_TIMEOUT = 3.0  # longer than the slowest page (the recommendations' cap, 2 s)
RETRY_PAUSE = 0.5
STOP_GRACE = 0.5  # seconds the shoppers get to finish their requests when told to stop
COUNTER = "demo.traffic.requests"


@dataclass(frozen=True)
class Visit:
    """One kind of request: ``{item}`` in the path is a random item of the site's catalogue."""

    weight: int
    path: str
    method: str = "GET"


@dataclass(frozen=True)
class Site:
    """A site to visit: its base URL, the JSON API listing its items, and the visits."""

    name: str
    base: str
    catalogue: str
    visits: tuple[Visit, ...]
    form_page: str = ""  # a page that sets the CSRF cookie its POST forms need


def django_shop(base: str) -> Site:
    return Site(
        name="django",
        base=base.rstrip("/"),
        catalogue="/api/products/",
        form_page="/products/{item}/",
        visits=(
            Visit(25, "/products/"),  # the N+1 list
            Visit(5, "/products/?fixed=1"),
            Visit(25, "/products/{item}/"),
            Visit(10, "/recommendations/"),  # slow
            Visit(8, "/checkout/", method="POST"),  # raises one time in four
            Visit(3, "/checkout/?fixed=1", method="POST"),  # its task without the N+1
            Visit(15, "/api/products/"),
            Visit(5, "/report/"),
            Visit(2, "/"),
        ),
    )


def flask_warehouse(base: str) -> Site:
    return Site(
        name="flask",
        base=base.rstrip("/"),
        catalogue="/api/stock",
        visits=(
            Visit(20, "/warehouses"),  # the N+1 list
            Visit(4, "/warehouses?fixed=1"),
            Visit(20, "/stock/{item}"),
            Visit(10, "/api/stock"),
            Visit(6, "/sync", method="POST"),  # raises one time in five
            Visit(2, "/"),
        ),
    )


class Shopper:
    """One simulated user: a thread with an HTTP session, visiting ``sites`` until told to stop."""

    def __init__(
        self, sites: Sequence[Site], *, rate: float, client: Zibrato, stop: threading.Event
    ) -> None:
        self.sites = sites
        self.rate = rate
        self.client = client
        self.stop = stop
        self.random = random.Random()
        self.session = requests.Session()
        self.items: dict[str, list[int]] = {}

    def run(self) -> None:
        visits = [(site, visit) for site in self.sites for visit in site.visits]
        weights = [visit.weight for _, visit in visits]
        due = time.monotonic()
        try:
            while not self.stop.is_set():
                site, visit = self.random.choices(visits, weights)[0]
                if not self.visit(site, visit):
                    self.stop.wait(RETRY_PAUSE)
                    due = time.monotonic()
                    continue
                # Visits are due at random times of a steady rate, whatever each one took,
                # but a shopper that fell behind (a slow page) does not rush to catch up.
                due = max(due + self.random.expovariate(self.rate), time.monotonic() - 1.0)
                self.stop.wait(max(0.0, due - time.monotonic()))
        finally:
            self.session.close()

    def visit(self, site: Site, visit: Visit) -> bool:
        """Make one request and count its answer; return False when the site did not answer."""
        try:
            response = self.request(site, visit)
        except (requests.RequestException, LookupError, ValueError):
            self.client.incr(COUNTER, tags={"site": site.name, "status": "failed"})
            return False
        self.client.incr(COUNTER, tags={"site": site.name, "status": str(response.status_code)})
        return True

    def request(self, site: Site, visit: Visit) -> requests.Response:
        item = self.random.choice(self.catalogue(site))
        url = site.base + visit.path.format(item=item)
        if visit.method == "GET":
            return self.session.get(url, timeout=REQUEST_TIMEOUT)
        data: dict[str, Any] = {"product": item, "quantity": self.random.randint(1, 3)}
        if site.form_page:
            if "csrftoken" not in self.session.cookies:
                self.session.get(site.base + site.form_page.format(item=item), timeout=10)
            data["csrfmiddlewaretoken"] = self.session.cookies["csrftoken"]
        return self.session.post(url, data=data, timeout=REQUEST_TIMEOUT, allow_redirects=False)

    def catalogue(self, site: Site) -> list[int]:
        """Return the ids of the site's items, asked once from its JSON API."""
        if site.name not in self.items:
            answer = self.session.get(site.base + site.catalogue, timeout=REQUEST_TIMEOUT)
            answer.raise_for_status()
            (listing,) = answer.json().values()
            self.items[site.name] = [entry["id"] for entry in listing] or [1]
        return self.items[site.name]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_site.traffic", description=__doc__)
    parser.add_argument("--django", required=True, help="the Django shop's base URL")
    parser.add_argument("--flask", help="the Flask warehouse's base URL")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="requests per second, all shoppers together"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.0, help="stop after N seconds (default: never)"
    )
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error(f"--rate must be more than 0, not {args.rate}")
    sites = [django_shop(args.django)]
    if args.flask:
        sites.append(flask_warehouse(args.flask))

    stop = stop_on_signals()
    client = Zibrato(source="traffic")
    shoppers = [
        threading.Thread(
            target=Shopper(sites, rate=args.rate / SHOPPERS, client=client, stop=stop).run,
            name=f"shopper-{number}",
            daemon=True,
        )
        for number in range(SHOPPERS)
    ]
    for shopper in shoppers:
        shopper.start()
    stop.wait(args.seconds or None)
    stop.set()
    # A shopper waiting for a page that will never come (its server stopped first) is
    # left behind: the process ends without it.
    deadline = time.monotonic() + STOP_GRACE
    for shopper in shoppers:
        shopper.join(max(0.0, deadline - time.monotonic()))
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
