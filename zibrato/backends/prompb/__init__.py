"""The Prometheus remote write 1.0 messages (``remote_write.proto``), for the remote-write
backend.

``remote_write_pb2.py`` and ``.pyi`` are generated from ``remote_write.proto`` (a cut-down
copy of Prometheus' ``prompb``) by ``.ci/generate-prompb`` and committed; they need the
``protobuf`` package, which the remote-write extra installs (``pip install
'.[remote-write]'`` in a checkout).
"""
