"""Stage 7, promotion: who becomes champion, and the canary that decides it on live traffic.

``decision`` the pure choice (first version straight to champion, later ones to the canary);
``canary`` the canary analysis, pure functions over two scrapes of the service's metrics;
``canary_io`` its registry I/O: the traffic weight, the outcome on the version, rollback.
"""
