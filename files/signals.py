"""Signals other apps connect to, to follow a file through conversion.

Sent by the two conversion phases (``files.services.conversion``: the WAV,
then the MP3/MP4) and by ``file_fail``, each with ``sender=File`` and
``file_id=<uuid.UUID>``, once the transaction that recorded the new state has
committed, so a receiver always reads the state the signal announces.
"""

from __future__ import annotations

from django.dispatch import Signal

#: The WAV is stored and ``File.wav_name`` set, while the file is still
#: ``processing`` (its MP3/MP4 is being made): transcription can start.
file_audio_ready = Signal()

#: The MP3/MP4 and the WAV are stored; the file is ``ready``.
file_ready = Signal()

#: Conversion failed; ``File.error`` says why. Nothing of the file is stored.
file_failed = Signal()
