"""Who may do what, and who did it: identities, secrets, MLflow roles, service tokens.

- ``identity``: the identity a decision names (the authenticated MLflow user, else the OS user).
- ``envfile``: the stack's secrets in one env file (mode 0600): generate, rotate, check, mask.
- ``roles``: the registry's roles (reader, pipeline, promoter) and the rules MLflow's
  permissions cannot express (only promoters move ``champion``; readers only read; decision
  records name their author and never change).
- ``accounts``: the MLflow server's auth config, its service accounts, and provisioning of
  roles and users through MLflow's own API.
- ``mlflow_app``: ``mlflow server --app-name loraflow-auth``, MLflow's basic-auth app with
  ``roles`` applied to every request.
- ``tokens``: bearer tokens of the inference service, compared in constant time.
"""
