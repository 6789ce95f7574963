"""Production monitoring: what the model saw, what it serves now, and when that differs.

``features`` turns an input into what is kept of it (token and word counts, OOV words, an
embedding sketch; never text); ``profile`` builds the reference profile of a version's
evaluation split and the statistics shared with live windows; ``window`` is the service's
sliding window per version (redacted samples only when the policy asks); ``drift`` holds the
checks (scipy two-sample tests, staleness, online accuracy) and the report; ``sources`` reads
the version, its reference and the service's window and writes the report as a decision
record; ``slo`` renders the SLO file into Prometheus recording and burn-rate alert rules.
"""
