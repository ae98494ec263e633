"""What users run: the CLI, the demo, the deployments and the temporary Prefect server."""
