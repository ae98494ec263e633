"""The Prefect pipeline: tasks over the core and the adapters, and the flows that chain them."""
