"""The one Trio shell every daemon shares: nursery tree, socket activation, sd_notify and
watchdog, signals and draining, ``/healthz`` ``/readyz`` ``/metrics``, JSON logs."""
