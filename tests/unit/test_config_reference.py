"""The docs' configuration reference is generated from the config models: every key of every section
with its type, default and description, a key added later too, never a table written by hand; and
the README stays a landing page."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from perennial.app.config_reference import render_config_reference, render_settings_reference
from perennial.core.config import (
    ColumnRule,
    DataConfig,
    DeployConfig,
    DriftConfig,
    LabelsConfig,
    LifelongConfig,
    ModelConfig,
    PipelineConfig,
    PolicyConfig,
    ReportConfig,
    Settings,
    TrainingConfig,
    ValidationConfig,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_LIMIT = 12_000
# Every section of the config file, by its dotted prefix.
SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "model": ModelConfig, "policy": PolicyConfig, "validation": ValidationConfig,
    "validation.columns.<column>": ColumnRule, "drift": DriftConfig, "training": TrainingConfig,
    "lifelong": LifelongConfig, "deploy": DeployConfig, "labels": LabelsConfig,
    "report": ReportConfig,
}


def cells(line: str) -> list[str]:
    """A table row's cells; a pipe inside a code span or escaped is no separator."""
    found, cell, in_code, previous = [], "", False, ""
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code and previous != "\\":
            found.append(cell.strip())
            cell = ""
        else:
            cell += char
        previous = char
    return [*found, cell.strip()]


def row(markdown: str, key: str) -> list[str]:
    """The cells of the row whose first cell is `key` (in code)."""
    rows = [cells(line) for line in markdown.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, f"{len(rows)} rows for {key!r} in the rendered reference"
    return rows[0]


def expected_default(field: FieldInfo) -> str | None:
    """The default cell of a scalar default, worked out here independently; None for a container."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    return f"`{value}`" if isinstance(value, int | float | str | Path) else None


def own_keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The keys a section holds itself (not excluded, not a section of their own)."""
    return {name: field for name, field in model.model_fields.items()
            if not field.exclude and not (isinstance(field.annotation, type)
                                          and issubclass(field.annotation, BaseModel))}


@pytest.fixture(scope="module")
def reference() -> str:
    return render_config_reference()


@pytest.mark.parametrize("prefix", SECTIONS)
def test_every_key_of_a_section_is_rendered_with_its_default_and_description(reference, prefix):
    for name, field in own_keys(SECTIONS[prefix]).items():
        key, type_cell, default, description = row(reference, f"{prefix}.{name}")
        assert type_cell.startswith("`"), f"{key}: no type"
        if (expected := expected_default(field)) is not None:
            assert default == expected, f"{key}: default {default}, expected {expected}"
        assert description.startswith(field.description or "-"), f"{key}: description {description!r}"


def test_the_sections_here_are_every_section_and_nothing_else_is_listed(reference):
    sections = {name for name, field in PipelineConfig.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    assert sections == {prefix for prefix in SECTIONS if "." not in prefix}
    assert row(reference, "name")[2] == "required"
    keys = re.findall(r"^\| `([^`]+)` \|", reference, flags=re.M)
    assert len(keys) == 1 + sum(len(own_keys(model)) for model in SECTIONS.values()), keys
    # Kept out of the dump, so out of the reference: set by the loader, never by a user.
    assert "base_dir" not in reference and "config_file" not in reference


def test_keys_the_docs_name_show_their_real_defaults(reference):
    assert row(reference, "policy.drop_moderate")[2] == "`0.05`"
    assert "Also read as `accuracy_drop_moderate`" in row(reference, "policy.drop_moderate")[3]
    assert row(reference, "drift.workspace")[1:3] == ["`bool | str`", "`true`"]
    candidates = "`[fine_tune, retrain_window, retrain_batch, retrain_all]`"
    assert row(reference, "policy.candidates")[2] == candidates
    assert row(reference, "validation.columns")[2] == "`{}`"
    assert row(reference, "data.max_file_mb")[1] == "`float` (> 0)"
    assert row(reference, "data.source")[2] == "required"
    assert row(reference, "validation.columns.<column>.max")[2] == "unset"


class _Rule(BaseModel):
    limit: int = Field(3, ge=1, description="A limit of one rule.")


class _Section(BaseModel):
    rules: dict[str, _Rule] = Field(default_factory=dict, description="Rules by name.")
    knob: float | None = None


class _Root(BaseModel):
    section: _Section = Field(default_factory=_Section)
    hidden: Path = Field(Path("."), exclude=True, description="Set by a loader.")


def test_a_key_added_to_a_model_appears_in_the_reference_without_a_docs_edit():
    class NewPolicy(PolicyConfig):
        patience_batches: int = Field(7, ge=0, description="Batches to wait before acting.")

    class NewConfig(PipelineConfig):
        policy: NewPolicy = Field(default_factory=NewPolicy)

    assert row(render_config_reference(NewConfig), "policy.patience_batches") == [
        "`policy.patience_batches`", "`int` (>= 0)", "`7`", "Batches to wait before acting."]
    small = render_config_reference(_Root)
    assert row(small, "section.rules.<rule>.limit") == [
        "`section.rules.<rule>.limit`", "`int` (>= 1)", "`3`", "A limit of one rule."]
    assert row(small, "section.knob") == ["`section.knob`", "`float | null`", "unset", "-"]
    assert "hidden" not in small


def test_every_setting_is_rendered_as_its_environment_variables():
    settings = render_settings_reference()
    for name, field in Settings.model_fields.items():
        variable = f"PERENNIAL_{name.upper()}"
        lines = [line for line in settings.splitlines() if f"`{variable}`" in line]
        assert len(lines) == 1, f"{variable}: {len(lines)} rows"
        assert cells(lines[0])[3].startswith(field.description or "-")
    assert row(settings, "PERENNIAL_STATE_DIR")[2] == "`.perennial`"
    assert row(settings, "PERENNIAL_LOCK_WAIT_SECONDS")[2] == "`600.0`"
    assert "`PERENNIAL_MLFLOW_TRACKING_URI` or `MLFLOW_TRACKING_URI`" in settings


def _hook(name: str = "config_reference"):
    path = DOCS / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_hook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_hook_puts_the_generated_tables_in_the_configuration_page():
    plugin_error = pytest.importorskip("mkdocs.exceptions").PluginError  # the docs group's
    hook = _hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="configuration.md"))
    built = hook.on_page_markdown((DOCS / "configuration.md").read_text(), page=page)
    assert "<!-- config-reference -->" not in built and "<!-- settings-reference -->" not in built
    assert row(built, "policy.drop_moderate")[2] == "`0.05`"
    assert row(built, "PERENNIAL_STATE_URL")[2] == "unset"
    with pytest.raises(plugin_error, match="marker"):
        hook.on_page_markdown("# Configuration\n\nA table written by hand.", page=page)


def test_the_docs_show_the_committed_screenshot():
    """Linked as an image (a missing file fails `mkdocs build --strict`), made by docs/screenshots.py."""
    assert (DOCS / "images" / "report.png").stat().st_size > 10_000
    for page in ("index.md", "report.md"):
        assert "![The report page of the demo's model](images/report.png)" in (DOCS / page).read_text()


def test_no_docs_page_writes_a_key_of_the_reference_by_hand(reference):
    keys = re.findall(r"^\| (`[^`]+`) \|", reference, flags=re.M)
    for page in DOCS.glob("*.md"):
        lines = page.read_text().splitlines()
        by_hand = [key for key in keys if any(line.startswith(f"| {key} |") for line in lines)]
        assert not by_hand, f"{page.name} writes rows of the generated reference by hand: {by_hand}"


def test_the_readme_is_a_landing_page_linking_to_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_LIMIT, f"README.md is {len(readme.encode()):,} bytes"
    assert "```bash\npip install uv && uv run perennial demo\nuv run pytest\n```" in readme
    assert "![The report page of the demo's model](docs/images/report.png)" in readme
    assert "uv run mkdocs serve" in readme
    pages = re.findall(r"\]\((docs/[\w-]+\.md)(?:#[\w-]+)?\)", readme)
    assert len(pages) >= 10 and all((ROOT / page).is_file() for page in pages), pages
