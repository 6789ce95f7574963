"""The inference service: champion and challenger from the MLflow registry behind one endpoint.

``app`` builds the FastAPI application, ``guard`` refuses calls without the bearer token their
endpoint needs, ``schemas`` the request bodies and what refuses them,
``models`` holds the loaded versions and follows the registry's aliases, ``runtime`` loads a
version in its served form (the optimised one when it passed its gate, else the exact
pyfunc), ``batcher`` groups concurrent texts into one forward pass, ``generate``
``POST /generate`` for registered generators (limits, bounded queue, token metrics), ``routing``
sends a sticky share of request keys to the challenger, ``telemetry`` exposes Prometheus series
per model version, ``runner`` starts it (foreground or on an ephemeral loopback port) and
``replay`` sends held-out examples through it when a canary has no live traffic.
"""
