"""What a job costs, and how long its inference run may take."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal

from django.conf import settings

from whisper_site.celery import task_time_limits


def audio_seconds(duration: float) -> int:
    """Whole seconds billed for ``duration``: rounded up, after rounding to the millisecond.

    The millisecond rounding keeps a probe's float noise (11.0000000001 s) from costing a
    whole extra second.
    """
    return math.ceil(round(max(0.0, duration), 3))


def job_cost(*, duration: float, price_multiplier: Decimal, diarize: bool = False) -> int:
    """Tokens for one job: ceil(ceil(duration) x price_multiplier), in exact decimal arithmetic.

    A job that tells speakers apart costs that times ``DIARIZATION_PRICE_FACTOR``, rounded up
    again: ceil(ceil(ceil(duration) x price_multiplier) x factor).
    """
    cost = (Decimal(audio_seconds(duration)) * Decimal(price_multiplier)).to_integral_value(rounding=ROUND_CEILING)
    if diarize:
        # The setting is a float: its shortest decimal form (1.5, not 1.5000000000000000001).
        factor = Decimal(repr(float(settings.DIARIZATION_PRICE_FACTOR)))
        cost = (cost * factor).to_integral_value(rounding=ROUND_CEILING)
    return int(cost)


def time_limits(*, duration: float) -> tuple[int, int]:
    """Celery's (soft, hard) time limits of an inference run on ``duration`` seconds of audio.

    soft = base + factor x duration, hard = soft + 60 s; both capped so that the hard limit
    stays below the broker's visibility timeout (see docs/transcription.md for the longest
    audio this allows).
    """
    return task_time_limits(
        soft=settings.TRANSCRIPTION_TIME_LIMIT_BASE_SECONDS
        + settings.TRANSCRIPTION_TIME_LIMIT_PER_AUDIO_SECOND * max(0.0, duration)
    )
