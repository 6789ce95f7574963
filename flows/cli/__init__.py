"""The ``loraflow`` command line, split by command group.

``app`` the typer application and the pipeline commands (run, validate, validate-data,
quickstart, config-reference), the mirror (``hub``), discovery and audit, and the registry
views (status, models, lineage); ``serving`` serve, promote and rollback; ``stack`` up, down,
deploy and emit-event; ``views`` and ``registry_views`` the rich tables they print.
"""
