"""Prefect deployments of Perennial, declared once (see definitions.py and prefect.yaml)."""
