"""The Zibrato demo: a Django shop and a Flask warehouse measured into one dashboard.

``make run`` (or ``python -m demo_site.run``) prepares the databases, starts the broker
with the dashboard, prometheus and console backends, both sites under gunicorn and a
traffic generator, and stops them all on Ctrl-C. See README.md ("See it run").
"""
