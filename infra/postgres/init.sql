-- Runs once, on the first start of the compose `postgres` service (an empty volume).
-- POSTGRES_DB creates the Prefect database; MLflow's store gets a database of its own.
CREATE DATABASE mlflow OWNER loraflow;
