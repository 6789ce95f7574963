"""Stage 7, promotion: who becomes champion, and the canary that decides it on live traffic.

``decision`` the pure choice (first version straight to champion, later ones to the canary);
``canary`` the canary analysis, pure functions over two scrapes of the service's metrics;
``canary_io`` its registry I/O: the traffic lease, the outcome on the version, the abort
record; ``lease`` the challenger's share as a lease that expires unless the running flow
renews it; ``rollback`` rollback by hand (end a live canary, or restore the previous champion).
"""
