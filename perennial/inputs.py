"""Versions registered before the package had layers name their input conversion
`perennial.inputs.ModelInputs` in their skops files; loading them finds it here. New versions name
`perennial.core.inputs.ModelInputs`. Nothing else imports this module."""

from perennial.core.inputs import ModelInputs

__all__ = ["ModelInputs"]
