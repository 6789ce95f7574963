"""The ``monitor`` flow: live traffic against the reference profile; breaches start retraining.

Wiring only. Runs as ``loraflow monitor NAME`` and as a deployment on the monitoring policy's
own schedule (``python -m flows.monitor NAME --service-url URL``). A breach is an outcome, not
a failure: the run completes, the record says ``breach``, and the emitted event's trigger
starts the retraining deployment.
"""

from __future__ import annotations

import argparse

from prefect import flow
from prefect.runtime import flow_run

from tasks.core.config.loader import load_monitoring_policy
from tasks.core.home import MONITORING_POLICY, REPO_ROOT, Home
from tasks.core.registry.history import actor_pipeline
from tasks.monitor import emit_breach_events, observe, record_monitor

FLOW_NAME = "monitor"
ENTRYPOINT = "flows/monitor.py:monitor_flow"


@flow(name=FLOW_NAME, flow_run_name="monitor {model_name}")
def monitor_flow(
    model_name: str,
    service_url: str,
    version: str | None = None,
    policy_path: str | None = None,
    actor: str = "",
) -> dict:
    """Judge ``version`` (default: the champion) of ``model_name`` on the live window of the
    service at ``service_url``; record the report; emit an event per kind of breach."""
    home = Home.from_env().ensure()
    policy = load_monitoring_policy(policy_path or MONITORING_POLICY)
    report = observe(model_name, version, service_url, policy, home)
    key = f"monitor:{flow_run.get_id() or ''}:{report.version}"
    record_id = record_monitor(report, actor or actor_pipeline(), key, home)
    events = emit_breach_events(report, record_id)
    return {
        "model": model_name,
        "version": report.version,
        "outcome": report.outcome,
        "record": record_id,
        "events": report.events(),
        "event_ids": events,
        "findings": [f.line() for f in report.findings],
    }


def deploy(model_name: str, service_url: str, policy_path: str | None = None):
    """Register ``monitor/NAME`` on the policy's cron, on the ``cpu`` pool."""
    policy = load_monitoring_policy(policy_path or MONITORING_POLICY)
    from prefect.schedules import Cron

    return flow.from_source(source=str(REPO_ROOT), entrypoint=ENTRYPOINT).deploy(
        name=model_name,
        work_pool_name="cpu",
        schedules=[Cron(policy.cron, timezone="UTC")],
        parameters={
            "model_name": model_name,
            "service_url": service_url,
            "policy_path": policy_path,
        },  # fmt: skip
        description=f"Drift, staleness and online accuracy of {model_name}'s champion.",
        tags=["loraflow", f"model:{model_name}", "monitor"],
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deploy the monitor of one registered model.")
    parser.add_argument("model_name")
    parser.add_argument("--service-url", required=True, help="The running `loraflow serve`.")
    parser.add_argument("--policy", default=None, help="Monitoring policy YAML.")
    args = parser.parse_args(argv)
    deployment_id = deploy(args.model_name, args.service_url, args.policy)
    print(f"deployed {FLOW_NAME}/{args.model_name} ({deployment_id})")


if __name__ == "__main__":
    main()
