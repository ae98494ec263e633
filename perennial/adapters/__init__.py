"""One module per outside tool (batch files, Great Expectations, Evidently, MLflow, Prefect events and
artifacts, matplotlib), each returning our own types."""
