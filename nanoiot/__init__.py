"""NanoIoT: an MQTT-over-TLS broker that authenticates devices by their X.509 certificates.

This package holds what every layer shares (errors, settings) and the command line.
It imports nothing at package level, so the pure core in ``auth/`` can use ``nanoiot.errors``
without pulling in the rest.
"""

__version__ = "0.1.0"
