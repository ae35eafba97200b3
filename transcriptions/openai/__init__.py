"""OpenAI's audio API (``/audio/transcriptions``, ``/audio/translations``, ``/models``) over our jobs.

- :mod:`.apis`: the views, their input and output serializers and their schema;
- :mod:`.services`: an upload becomes one of the user's files and one ordinary job; the wait;
- :mod:`.selectors`: the models offered (the installed ones and ``whisper-1``);
- :mod:`.responses`: OpenAI's answers, read from the job's stored result;
- :mod:`.errors`: OpenAI's JSON error objects, on these routes only.
"""
