"""Shared fixtures: users, sessions, API keys and API clients."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from kombu import pools
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import User, UserSession
from whisper_site.celery import app as celery_app

PASSWORD = "SecureP@ssw0rd123!"
# kombu's Redis lists of a queue's priorities other than 0 (its default steps 3, 6, 9).
PRIORITY_SUFFIXES = ("\x06\x163", "\x06\x166", "\x06\x169")
DATA_DIR = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _isolated_media(settings: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """Each test stores media under its own temporary folder and has a cache of its own.

    The cache is in memory so that two test runs on one machine never share
    login-throttle counters through the file cache under DATA_DIR.
    """
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": str(tmp_path)}
    }
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _cheap_password_hashing(settings: pytest.FixtureRequest) -> None:
    """Passwords are hashed with Argon2id as in production, at the lowest cost Argon2 allows.

    At production's cost (2 passes over 100 MiB per hash) hashing was most of the
    time of every test that registers or logs in. The hashes keep production's
    format (``argon2$argon2id$...``); tests/accounts/test_password_hashing.py
    checks production's cost.
    """
    settings.ARGON2_TIME_COST = 1
    settings.ARGON2_MEMORY_COST = 8
    settings.ARGON2_PARALLELISM = 1


@pytest.fixture(autouse=True)
def _eager_celery() -> Iterator[None]:
    """Tasks run in-process unless a test starts a real worker (see the e2e fixtures)."""
    # The app reads Django settings under the CELERY_ namespace, and Celery
    # then looks up the prefixed key first: setting ``task_always_eager``
    # alone is silently ignored (tasks went to the real broker).
    previous = celery_app.conf.task_always_eager
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = True
    yield
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = previous


def celery_worker_argv(*, name: str, queues: Iterable[str], concurrency: int = 1) -> list[str]:
    """The command line of a real Celery worker of the project's app: prefork, ``queues``, node ``name``."""
    return [
        sys.executable, "-m", "celery", "-A", "whisper_site", "worker",
        "--pool", "prefork", "--concurrency", str(concurrency), "-Q", ",".join(queues),
        "-n", name, "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip


def redis_required(url: str) -> None:
    """Fail (not skip) the test when no Redis answers at ``url``: the real broker is part of what it tests."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"these tests need Redis at {url}: {exc}")
    finally:
        client.close()


def redis_queues_delete(url: str, queues: Iterable[str]) -> None:
    """Remove what kombu keeps in the Redis at ``url`` for ``queues``: each priority's list and the binding."""
    queues = list(queues)
    client = redis.Redis.from_url(url)
    try:
        client.delete(
            *(f"{queue}{suffix}" for queue in queues for suffix in ("", *PRIORITY_SUFFIXES)),
            *(f"_kombu.binding.{queue}" for queue in queues),
        )
    finally:
        client.close()


def forget_broker_connections() -> None:
    """Make Celery build its broker connections and queue declarations again from its settings.

    Celery caches them at first use. Its connection pool is also kombu's, kept by URL with a
    producer pool over it: closing only Celery's would leave that producer pool on a closed
    pool, and the next task sent to that URL fails ("Acquire on closed pool").
    """
    pools.reset()
    celery_app._pool = None
    celery_app.__dict__.pop("amqp", None)


def make_user(username: str = "alice", password: str = PASSWORD, **extra: object) -> tuple[User, UserSession]:
    user, session = account_services.user_register(username=username, password=password, user_agent="pytest")
    if extra:
        for name, value in extra.items():
            setattr(user, name, value)
        user.save()
    return user, session


@pytest.fixture
def user_and_session(db: None) -> tuple[User, UserSession]:
    return make_user()


@pytest.fixture
def user(user_and_session: tuple[User, UserSession]) -> User:
    return user_and_session[0]


@pytest.fixture
def session(user_and_session: tuple[User, UserSession]) -> UserSession:
    return user_and_session[1]


@pytest.fixture
def api_key(user: User) -> str:
    _, raw = account_services.api_key_create(user=user, name="test key")
    return raw


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def client_session(session: UserSession) -> APIClient:
    """A client authenticated with ``Basic <session-id>``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    return client


@pytest.fixture
def client_key(api_key: str) -> APIClient:
    """A client authenticated with ``Bearer <api-key>``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    return client


@pytest.fixture
def other_client(db: None) -> APIClient:
    """A second user's client, for isolation tests."""
    _, session = make_user("bob")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    return client


@pytest.fixture
def admin_client(db: None) -> APIClient:
    _, session = make_user("root_admin", is_admin=True, is_superuser=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    return client
