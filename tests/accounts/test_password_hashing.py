"""Production hashes passwords with Argon2id at Django's cost (the tests lower it, see conftest.py)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from django.contrib.auth.hashers import check_password, make_password
from django.test import override_settings

from accounts.models import User
from tests.conftest import PASSWORD

SETTINGS_FILE = Path(__file__).resolve().parents[2] / "whisper_site" / "settings.py"
COSTS = ("ARGON2_TIME_COST", "ARGON2_MEMORY_COST", "ARGON2_PARALLELISM")


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The settings module's values with no cost set in the environment, as a fresh process reads them."""
    for name in COSTS:
        monkeypatch.delenv(name, raising=False)
    values = runpy.run_path(str(SETTINGS_FILE))
    return {name: values[name] for name in ("PASSWORD_HASHERS", *COSTS)}


def test_production_hashes_with_argon2id_at_djangos_cost(production: dict[str, object]) -> None:
    with override_settings(**production):
        encoded = make_password(PASSWORD)
        assert encoded.startswith("argon2$argon2id$v=19$m=102400,t=2,p=8$")
        assert check_password(PASSWORD, encoded)
        assert not check_password(PASSWORD + "x", encoded)


@pytest.mark.django_db
def test_a_hash_made_at_another_cost_is_made_again_at_login(production: dict[str, object]) -> None:
    # The tests' cheap hash stands for one made before an operator raised the cost.
    user = User.objects.create_user("carol", PASSWORD)
    assert user.password.startswith("argon2$argon2id$v=19$m=8,t=1,p=1$")
    with override_settings(**production):
        assert user.check_password(PASSWORD)
    user.refresh_from_db()
    assert user.password.startswith("argon2$argon2id$v=19$m=102400,t=2,p=8$")
