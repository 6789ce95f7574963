"""Operations: the local stack (``loraflow up``) and deployments, planned without Prefect.

``stack`` ports, process command lines, URLs, the state file, and the deployment (schedule,
triggers, work pool) built from an experiment config.
"""
