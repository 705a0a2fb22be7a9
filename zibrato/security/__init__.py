"""Security of the ZeroMQ links: CURVE keys, their authenticator, and what a handshake says.

* :mod:`~zibrato.security.keygen` writes the key pairs (``zibrato keys DIR``);
* :mod:`~zibrato.security.curve` loads them for a client, a broker or a subscriber;
* :mod:`~zibrato.security.authenticator` answers a CURVE broker's ZAP requests;
* :mod:`~zibrato.security.policy` sets every Zibrato socket's mechanism (CURVE or none,
  with a ZAP domain that refuses peers of older ZMTP versions);
* :mod:`~zibrato.security.handshake` reads a socket's handshake events: who was refused,
  and why.
"""
