"""Operations: the local stack (``loraflow up``), its deployments and its health.

``stack`` ports, process command lines, URLs, the state file, and the deployment (schedule,
triggers, work pool) built from an experiment config; ``auth`` which secrets each process of an
authenticated stack gets (by environment) and which none may inherit; ``scheduler_health`` reads a Prefect
server's log for failing background services (the scheduler above all), so ``loraflow up``
and ``loraflow status`` report them; ``processes`` which local process runs which flow run,
and whether it is still alive; ``reconcile`` the MLflow side of cleaning up after a dead one
(runs KILLED, leases ended); ``links`` where the UIs of a state home answer (the
environment's servers or a running stack) and the page of a run in each; ``templates`` the
migrated empty Prefect and MLflow databases a new home starts from; ``preload`` imports done
ahead, in a thread or before a fork, where a process would otherwise wait.
"""
