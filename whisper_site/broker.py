"""Choosing the Celery broker: Redis when one answers, else an embedded one."""

from __future__ import annotations

import logging

import redis

logger = logging.getLogger(__name__)

EMBEDDED_BROKER_URL = "filesystem://"


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a Redis server at ``url`` answers PING within ``timeout`` seconds."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def broker_url_choose(redis_url: str) -> str:
    """``redis_url`` when Redis answers there, else the embedded filesystem broker (logged once)."""
    if redis_answers(redis_url):
        return redis_url
    logger.warning("Redis at %s does not answer: using the embedded filesystem broker (one machine only)", redis_url)
    return EMBEDDED_BROKER_URL
