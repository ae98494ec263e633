"""Pure logic: configuration, types, schema, policy, lifelong learning, model families, state.

No Prefect, MLflow, Great Expectations or Evidently here."""
