"""Matplotlib adapter: the accuracy matrix as a picture for the MLflow run."""

from __future__ import annotations

from pathlib import Path

from perennial.core.lifelong import AccuracyMatrix


def accuracy_heatmap(matrix: AccuracyMatrix, path: Path) -> Path:
    """R[i, j] as a heatmap: rows the model in service after each batch, columns the windows."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: a PNG for the MLflow run
    import matplotlib.pyplot as plt

    table = matrix.table()
    size = max(4.0, 0.45 * len(table.columns) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.8))
    image = ax.imshow(100 * table.to_numpy(), cmap="viridis", vmin=50, vmax=100)
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=7)
    ax.set_xlabel("window (holdout of batch)")
    ax.set_ylabel("model in service after batch")
    fig.colorbar(image, ax=ax, label="accuracy %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
