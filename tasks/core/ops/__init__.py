"""Operations: the local stack and its health.

``scheduler_health`` reads a Prefect server's log for failing background services (the
scheduler above all), so ``loraflow up`` and ``loraflow status`` report them.
"""
