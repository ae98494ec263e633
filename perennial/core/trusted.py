"""Loading registered models without running code from the registry.

MLflow's own loader takes the serialization format and the skops trusted types from the version's
MLmodel file, which anyone who can write to the registry controls: a pickle there runs its payload.
Perennial reads the flavor itself and loads only skops files, trusting only the types of its own
families and those the model's config declares (`model.trusted_types`, for a user's own model).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from perennial.core.families import ALL_TRUSTED_TYPES
from perennial.core.types import RegistryError

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

# The one file MLflow's sklearn flavor writes for `serialization_format: skops`.
MODEL_FILE = "model.skops"
REFUSAL = "Perennial loads only the skops models it saved (refusing to run code from the registry)"


def check_flavor(mlmodel: Path, where: str) -> None:
    """The MLmodel file describes a skops-saved scikit-learn model in MODEL_FILE, or RegistryError."""
    try:
        flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("sklearn")
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{where}: unreadable MLmodel file ({type(exc).__name__}); {REFUSAL}") from None
    if not isinstance(flavor, dict):
        raise RegistryError(f"{where}: not a scikit-learn model; {REFUSAL}")
    # MLflow loads a flavor without the key as pickle.
    saved_as = flavor.get("serialization_format", "pickle")
    if saved_as != "skops":
        raise RegistryError(f"{where}: saved as {saved_as}; {REFUSAL}")
    if flavor.get("pickled_model") != MODEL_FILE:
        raise RegistryError(f"{where}: model file {flavor.get('pickled_model')!r} instead of "
                            f"{MODEL_FILE!r}; {REFUSAL}")


def trusted_types(declared: Sequence[str] = ()) -> list[str]:
    """What loading a version trusts: the types of Perennial's families and the declared ones."""
    return sorted({*ALL_TRUSTED_TYPES, *declared})


def untrusted_in(model: Any, declared: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The types a model's skops file would hold beyond what loading trusts (they must be declared
    before it may be registered), and those it holds that are trusted (listed in its MLmodel file)."""
    import skops.io as sio

    held = set(sio.get_untrusted_types(data=sio.dumps(model)))
    trusted = set(trusted_types(declared))
    return sorted(held - trusted), sorted(held & trusted)


def load_skops(path: Path, where: str, declared: Sequence[str] = ()) -> Pipeline:
    """The pipeline Perennial calls (see `without_inputs`) from a skops file holding only our types
    and the `declared` ones (`model.trusted_types`)."""
    import skops.io as sio
    from skops.io.exceptions import UntrustedTypesFoundException

    trusted = trusted_types(declared)
    try:
        model = sio.load(path, trusted=trusted)
    except zipfile.BadZipFile:
        raise RegistryError(f"{where}: {MODEL_FILE} is not a skops file; {REFUSAL}") from None
    except UntrustedTypesFoundException:
        # Found again only to name them: skops checks before it builds anything.
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(trusted))
        raise RegistryError(f"{where}: holds types Perennial does not trust ({', '.join(untrusted)}); "
                            f"{REFUSAL} (a model of your own: declare its types in "
                            "model.trusted_types)") from None
    from sklearn.pipeline import Pipeline

    if not isinstance(model, Pipeline):
        raise RegistryError(f"{where}: a {type(model).__name__}, not a scikit-learn Pipeline; {REFUSAL}")
    from perennial.core.inputs import without_inputs

    return without_inputs(model)
