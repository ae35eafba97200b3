"""Fixtures of the admin tests: the installed models (metrics list every installed model)."""

from __future__ import annotations

from tests.transcriptions.conftest import installed_models  # noqa: F401  (a fixture)
