"""An example workload: a pretend web shop that records what a real one would.

Run it next to a broker (``make run`` does) and watch the metrics arrive::

    python examples/workload.py [--publish ADDR] [--seconds N]
"""

from __future__ import annotations

import argparse
import random
import time

from zibrato import Zibrato


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--publish",
        default=None,
        help="broker frontend (default: ZIBRATO_PUBLISH or tcp://127.0.0.1:5550)",
    )
    parser.add_argument(
        "--seconds", type=float, default=0, help="stop after N seconds (0: run until interrupted)"
    )
    args = parser.parse_args()

    z = Zibrato(args.publish, source="example-shop", tags={"app": "shop"})

    @z.time_me(level="debug", name="shop.render", source="example-shop")
    def render() -> None:
        time.sleep(random.uniform(0.0005, 0.002))

    deadline = time.monotonic() + args.seconds if args.seconds else None
    queue_depth = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            route = random.choice(["/", "/cart", "/orders/<id>"])
            with z.timer("http.server.request.duration", tags={"http.route": route}):
                render()
                z.observe(
                    "db.client.request.queries", random.randint(1, 6), tags={"http.route": route}
                )
            with z.Count_me(level="info", name="shop.visits", source="example-shop"):
                pass
            if random.random() < 0.2:
                z.incr("orders.placed", tags={"shop": random.choice(["eu", "us"])})
            queue_depth = max(0, queue_depth + random.randint(-3, 3))
            z.gauge("queue.depth", queue_depth)
            if random.random() < 0.01:
                z.gauge(
                    level="crit",
                    name="shop.disk_free_ratio",
                    value=round(random.uniform(0.1, 0.2), 3),
                )
            time.sleep(0.01)
    except KeyboardInterrupt:
        pass
    finally:
        z.close()


if __name__ == "__main__":
    main()
