"""Cost of recording one metric inside the instrumented process: Zibrato beside the
libraries a user would pick instead, in one run so that the ratios hold.

Adapted from the shared anchor benchmark: Zibrato's figures include its publisher
thread's work (each timed run of 50 000 calls ends with a flush), and the run reports
any dropped events.

Usage: python anchors_overhead.py [N]

Zibrato rows appear when the `zibrato` package is importable: a broker subprocess
(`python -m zibrato broker`) and a draining subscriber subprocess are started first, so
the figure includes the full hand-off to ZeroMQ (with no subscriber, PUB sockets drop
everything early and the figure would flatter).
"""

import socket
import subprocess
import sys
import time
import timeit

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000


def per_call(stmt, g, n=N, repeat=5):
    return min(timeit.Timer(stmt, globals=g).repeat(repeat=repeat, number=n)) / n * 1e9


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


results = {}


def noop():
    pass


results["floor: empty function call"] = per_call("noop()", {"noop": noop})
results["floor: perf_counter_ns()"] = per_call("pc()", {"pc": time.perf_counter_ns})

rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
port = rx.getsockname()[1]
try:
    import statsd

    sc = statsd.StatsClient("127.0.0.1", port)
    results["statsd: incr"] = per_call("sc.incr('app.hits')", {"sc": sc})
    results["statsd: timer ctx"] = per_call("with sc.timer('app.t'):\n    pass", {"sc": sc})
except ImportError:
    pass
try:
    import prometheus_client as pc

    reg = pc.CollectorRegistry()
    c = pc.Counter("hits", "h", registry=reg)
    h = pc.Histogram("lat", "l", registry=reg)
    cl = pc.Counter("hits_l", "h", ["view"], registry=reg)
    results["prometheus_client: Counter.inc"] = per_call("c.inc()", {"c": c})
    results["prometheus_client: labels().inc"] = per_call("cl.labels('v').inc()", {"cl": cl})
    results["prometheus_client: Histogram.time ctx"] = per_call(
        "with h.time():\n    pass", {"h": h}
    )
except ImportError:
    pass
try:
    from opentelemetry.sdk.metrics import MeterProvider

    meter = MeterProvider().get_meter("bench")
    oc = meter.create_counter("hits")
    oh = meter.create_histogram("lat")
    attrs = {"view": "v"}
    results["opentelemetry: counter.add"] = per_call("oc.add(1, attrs)", {"oc": oc, "attrs": attrs})
    results["opentelemetry: histogram.record"] = per_call(
        "oh.record(1.5, attrs)", {"oh": oh, "attrs": attrs}
    )
except ImportError:
    pass
try:
    from datadog.dogstatsd import DogStatsd

    dda = DogStatsd(host="127.0.0.1", port=port, disable_telemetry=True, disable_aggregation=False)
    results["dogstatsd: increment (aggregating)"] = per_call(
        "dd.increment('app.hits')", {"dd": dda}
    )
    results["dogstatsd: timed ctx (aggregating)"] = per_call(
        "with dd.timed('app.t'):\n    pass", {"dd": dda}
    )
except ImportError:
    pass

procs = []
try:
    import zibrato  # noqa: F401

    have_zibrato = True
except ImportError:
    have_zibrato = False
if have_zibrato:
    from zibrato import Zibrato

    fe, be = free_port(), free_port()
    procs.append(
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zibrato",
                "broker",
                "--frontend",
                f"tcp://127.0.0.1:{fe}",
                "--backend-address",
                f"tcp://127.0.0.1:{be}",
            ]
        )
    )
    drain = (
        "import zmq,sys\nc=zmq.Context();s=c.socket(zmq.SUB);s.setsockopt(zmq.SUBSCRIBE,b'');"
        "s.setsockopt(zmq.RCVHWM,0);s.connect(sys.argv[1])\nwhile True: s.recv()"
    )
    procs.append(subprocess.Popen([sys.executable, "-c", drain, f"tcp://127.0.0.1:{be}"]))
    time.sleep(1.0)
    z = Zibrato(publish=f"tcp://127.0.0.1:{fe}")
    z.incr("warmup")
    z.flush()
    time.sleep(0.5)
    tags = {"view": "v"}
    # Zibrato does part of its work on its publisher thread (checking, encoding, sending).
    # So that figure is not left out, each timed run ends with z.flush(): the time per
    # call below includes the whole hand-off to ZeroMQ. Runs stay below the buffer bound
    # (100 000 events) so that nothing is dropped.
    ZN = min(N, 50_000)

    def full(body, g):
        loop = f"for _ in range({ZN}):\n" + "\n".join("    " + line for line in body.splitlines())
        code = loop + "\nz.flush()"
        return min(timeit.Timer(code, globals=g).repeat(repeat=7, number=1)) / ZN * 1e9

    zg = {"z": z, "tags": tags}
    results["zibrato: incr"] = full("z.incr('app.hits')", zg)
    results["zibrato: incr with tags"] = full("z.incr('app.hits', tags=tags)", zg)
    results["zibrato: timer ctx"] = full("with z.timer('app.t'):\n    pass", zg)
    results["zibrato: Count_me ctx (2013 API)"] = full(
        "with z.Count_me(level='info', name='c', source='s'):\n    pass", zg
    )

    @z.time_me(name="decorated")
    def decorated():
        pass

    results["zibrato: time_me decorated call"] = full("f()", {**zg, "f": decorated})
    results["floor: undecorated call (same loop)"] = full("f()", {**zg, "f": noop})
    dropped = z.stats()["dropped"]
    z.close()
for p in procs:
    p.terminate()
for p in procs:
    p.wait()

w = max(len(k) for k in results)
for k, v in results.items():
    print(f"{k:<{w}}  {v:9.0f} ns/call")
if have_zibrato:
    print(f"zibrato events dropped during the run: {dropped or 'none'}")
    base = results["floor: undecorated call (same loop)"]
    print(
        f"zibrato: time_me decorated call over the bare call: "
        f"{results['zibrato: time_me decorated call'] - base:.0f} ns"
    )
    for a, b in [
        ("zibrato: incr", "prometheus_client: Counter.inc"),
        ("zibrato: incr", "statsd: incr"),
        ("zibrato: timer ctx", "prometheus_client: Histogram.time ctx"),
    ]:
        if a in results and b in results:
            print(f"ratio {a} / {b}: {results[a] / results[b]:.2f}")
