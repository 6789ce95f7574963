"""The UIs show what matters, checked in a real headless Chromium (Selenium + chromedriver).

For the run the ``stack`` fixture made through the worker: the Prefect UI's deployment page
shows the cron schedule and the event triggers, its flow-run page shows the flow name and
every stage artifact and, on its Logs tab, each stage's decision; the MLflow UI's
registered-model page shows the model's aliases and the version page a clean model card.
Screenshots go to a temporary folder; ``LORAFLOW_SCREENSHOTS=docs/screenshots`` refreshes the
committed ones (a plain test run leaves the working tree clean).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from flows.cli.stack import prefect_client
from tests.ops.conftest import require

# Kept out of the default suite (its 10-minute budget): Chromium pages and screenshots take
# minutes on 2 cores; `make test-slow` runs it.
pytestmark = pytest.mark.slow

# Artifact keys of the seven stages (tasks/*.py); the UI must list each one.
STAGE_ARTIFACTS = {
    "discovery",
    "license-audit",
    "data-validation",
    "training",
    "gate-decision",
    "registration",
    "promotion",
}
CHROME_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # No network here: keep Chromium from calling home (updates, sync, QUIC probes).
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


@pytest.fixture(scope="module")
def browser():
    chromium = require("/usr/bin/chromium", "chromium browser")
    driver_path = require("/usr/bin/chromedriver", "chromium-driver")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download drivers
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="loraflow-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")  # a new, empty profile
        # UTC, so the schedule reads the same on every machine.
        service = Service(driver_path, env={**os.environ, "TZ": "UTC"})
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    chosen = os.environ.get("LORAFLOW_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_text(driver, *texts: str, timeout: float = 60) -> str:
    """Wait until every one of ``texts`` is on the page (the UIs render client-side)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: all(t in page_text(d) for t in texts))
    return page_text(driver)


def click_text(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//*[normalize-space(.)='{text}']").click()


def test_prefect_deployment_page_shows_schedule_and_triggers(stack, browser, shots):
    with prefect_client(stack.api) as client:
        deployment = client.read_deployment_by_name("finetune/tiny-test")
    browser.get(stack.urls.deployment(str(deployment.id)))
    wait_text(
        browser,
        "tiny-test",
        "At 03:00 AM, only on Monday",  # the UI's rendering of cron '0 3 * * 1'
        "tiny-test: retrain on data.updated",
        "tiny-test: retrain on drift.detected",
    )
    browser.save_screenshot(str(shots / "prefect-deployment.png"))


def test_prefect_flow_run_page_shows_flow_and_stage_artifacts(stack, browser, shots):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with prefect_client(stack.api) as client:
        run = client.read_flow_run(stack.flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    keys = {a.key for a in artifacts if a.key}
    assert keys >= STAGE_ARTIFACTS, f"stage artifacts missing: {STAGE_ARTIFACTS - keys}"

    browser.get(stack.urls.flow_run(stack.flow_run_id))
    wait_text(browser, run.name, "finetune", "tiny-test", "Completed", "Artifacts")
    click_text(browser, "Artifacts")
    shown = wait_text(browser, *sorted(keys))
    assert all(key in shown for key in keys)
    browser.set_window_size(1400, 1700)  # the timeline and every artifact card in one shot
    browser.save_screenshot(str(shots / "prefect-flow-run.png"))
    browser.set_window_size(1400, 1000)


def test_mlflow_registered_model_page_shows_aliases(stack, browser, shots):
    from mlflow.tracking import MlflowClient

    uri = stack.env["MLFLOW_TRACKING_URI"]
    model = MlflowClient(uri, registry_uri=uri).get_registered_model("tiny-lora")
    assert "champion" in model.aliases
    browser.get(stack.urls.registered_model("tiny-lora"))
    shown = wait_text(browser, "tiny-lora", "Version 1", *(f"@ {a}" for a in model.aliases))
    assert "base_repo_id" in shown  # the lineage tags are on the version row
    _close_assistant(browser)
    browser.save_screenshot(str(shots / "mlflow-registered-model.png"))


# What each stage writes to the flow run's log (tasks/*.py, log_decision).
STAGE_DECISIONS = (
    "discover: pinned model",
    "audit: allow",
    "validate: pass",
    "fine-tune: MLflow run",
    "gates: pass",
    "register: tiny-lora v1",
    "promote: promote v1",
)


def test_prefect_flow_run_logs_show_each_stage_decision(stack, browser, shots):
    browser.get(stack.urls.flow_run(stack.flow_run_id))
    wait_text(browser, "finetune", "Logs")
    click_text(browser, "Logs")
    shown = wait_text(browser, *STAGE_DECISIONS)
    assert "served with preprocessing: strip" in shown
    browser.set_window_size(1400, 2600)  # the graph and the log down to the promotion
    browser.save_screenshot(str(shots / "prefect-flow-run-logs.png"))
    browser.set_window_size(1400, 1000)


def test_mlflow_version_page_shows_a_clean_model_card(stack, browser, shots):
    browser.get(f"{stack.urls.mlflow}/#/models/tiny-lora/versions/1")
    shown = wait_text(browser, "tiny-lora", "Intended use", "Input preprocessing", "Gates")
    assert "library_name: peft" not in shown and "pipeline_tag:" not in shown  # no raw YAML
    _close_assistant(browser)
    browser.set_window_size(1400, 1700)
    browser.save_screenshot(str(shots / "mlflow-model-version.png"))
    browser.set_window_size(1400, 1000)


def _close_assistant(driver) -> None:
    """MLflow 3.17 opens an 'Assistant' side panel over half the page; close it if present."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        for button in driver.find_elements(By.CSS_SELECTOR, "button[aria-label*='lose']"):
            if button.is_displayed():
                button.click()
                return
    except WebDriverException:
        return
