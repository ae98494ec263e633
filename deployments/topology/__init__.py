"""The production topology on one machine (docs/topology.md), started and stopped by
`python -m deployments.topology up|down`:

    PostgreSQL ── databases prefect, mlflow, mlflow_auth, perennial (Perennial's shared state)
    S3 (moto) ─── bucket perennial-artifacts: MLflow's artifacts
    MLflow server, basic auth ── PostgreSQL + S3
    Prefect server, auth string ── PostgreSQL
    work pool `perennial` (process) ── worker-1, worker-2, each with its own local folder
    two models (models/*.yaml) deployed with `prefect deploy --all` and the repository's prefect.yaml

Secrets come from the environment only (PGPASSWORD, PREFECT_API_AUTH_STRING,
MLFLOW_TRACKING_PASSWORD); no file the topology writes holds one. Every process listens on 127.0.0.1.
"""
