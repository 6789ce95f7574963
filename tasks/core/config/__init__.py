"""The experiment's configuration: validated once, each stage handed its own section.

``spec`` the frozen base of every schema model; ``experiment`` the experiment file's schema
(the registry section and the whole ``ExperimentConfig``); ``data`` the data section (splits,
column mapping, normalisation, checks, PII); ``audit`` the discovery and
license sections and the license policy file; ``train`` the LoRA and training sections;
``evaluation`` the eval and gate sections and the gate policy file; ``generation`` decoding
settings and the answer format check of causal LMs; ``canary`` the canary section and its policy
file; ``monitoring`` the monitoring policy (live window, drift and quality thresholds) and the
SLO file; ``schedule`` when and where a deployed experiment retrains;
``loader`` reads YAML layers (``extends``), validates them and names the file and key of an
error; ``reference`` renders docs/configuration.md from the field descriptions;
``preflight`` checks before training what the schema cannot (gate classes against the
labels, golden file, slice columns, target modules against the model's layers, batch size
against the data).
"""
