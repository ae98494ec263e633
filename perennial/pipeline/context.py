"""The cycle context: what the steps of one model's cycle share, so each takes what it needs from one
argument instead of a row of them."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from perennial.adapters.postgres_state import state_store
from perennial.core.config import PipelineConfig, Settings, load_config
from perennial.core.lifelong import TARGET_QUANTILES
from perennial.core.metrics import Metric
from perennial.core.schema import metric_for
from perennial.core.state import StateStore
from perennial.core.types import Batch, Champion, CycleRecord, Schema


@dataclass
class Cycle:
    """A model's config, the infrastructure settings and its state; then, once a batch is loaded, the
    batch, its schema, the champion it is judged against and its ledger line as it is written."""

    config: PipelineConfig
    settings: Settings
    store: StateStore
    batch: Batch | None = None
    schema: Schema | None = None
    champion: Champion | None = None
    record: CycleRecord | None = None

    @classmethod
    def open(cls, config: PipelineConfig | str | Path, settings: Settings | None = None) -> Cycle:
        """The context of a model's runs. Settings are passed in by the caller (the CLI, the demo, the
        benchmark); a run a Prefect deployment starts reads them from its worker's environment."""
        config = config if isinstance(config, PipelineConfig) else load_config(config)
        settings = settings or Settings()
        return cls(config, settings, state_store(settings, config.name))

    def on(self, batch: Batch, schema: Schema | None = None, champion: Champion | None = None) -> Cycle:
        """This model's context for one batch."""
        return replace(self, batch=batch, schema=schema, champion=champion, record=None)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def metric(self) -> Metric:
        """The metric this model is judged by, bound to its target (`policy.metric`)."""
        return metric_for(self.config, self.schema)

    @property
    def replay_quantiles(self) -> int:
        """What the replay memory balances over: classes (0), or quantiles of a regression target."""
        return TARGET_QUANTILES if self.schema is not None and self.schema.regression else 0
