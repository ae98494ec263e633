"""MLflow adapter: cycle runs, model versions with lineage, and the champion / challenger aliases.

One module per job; this package's names are the adapter's interface:

- `connection`: the client on the configured store, outages, the tags Perennial sets;
- `runs`: one MLflow run per batch (decision, drift, validation, lifelong metrics and cost);
- `registering`: a challenger logged with its lineage and registered once per batch;
- `loading`: registered versions loaded as our own types (skops only, trusted types only);
- `aliases`: promotion by check-and-set, reuse, rollback;
- `history`: the `champion` alias history kept with the registered model.
"""

from perennial.adapters.mlflow_registry.aliases import promote, reinstate, rollback
from perennial.adapters.mlflow_registry.connection import (
    CHALLENGER,
    CHAMPION,
    NOTHING_WRITTEN,
    REFERENCE_ARTIFACT,
    REPLAY_ARTIFACT,
    TAG_PREFIX,
    Tag,
    check_reachable,
    client,
    experiment_id,
    not_refused,
    outage,
    outages,
    run_url,
)
from perennial.adapters.mlflow_registry.history import HISTORY_TAG, champion_history
from perennial.adapters.mlflow_registry.loading import (
    champion_version,
    former_champions,
    load_champion,
    load_model,
    load_version,
    registered_versions,
    replay_memory,
)
from perennial.adapters.mlflow_registry.registering import check_trusted, register
from perennial.adapters.mlflow_registry.runs import (
    log_champion_score,
    log_cycle,
    log_labels,
    log_lifelong,
    log_report,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "HISTORY_TAG", "NOTHING_WRITTEN", "REFERENCE_ARTIFACT", "REPLAY_ARTIFACT",
    "TAG_PREFIX", "Tag", "champion_history", "champion_version", "check_reachable", "check_trusted",
    "client",
    "experiment_id", "former_champions", "load_champion", "load_model", "load_version",
    "log_champion_score", "log_cycle", "log_labels", "log_lifelong", "log_report",
    "not_refused", "outage", "outages", "promote",
    "register", "registered_versions", "reinstate", "replay_memory", "rollback", "run_url",
]
