"""Search text typed by a person, made safe to put in a query."""

from __future__ import annotations


def search_text_clean(text: str) -> str:
    """``text`` without NUL characters.

    PostgreSQL refuses NUL in text values (a ``DataError``, so a 500), and
    a ``%00`` in a query string decodes to one. No username or filename can
    hold a NUL (both are validated or cleaned of control characters), so
    dropping it loses nothing a search could have matched, and every caller
    (the admin API, the admin site's change lists and autocomplete) keeps
    answering as for any other term, on every database alike.
    """
    return text.replace("\x00", "")
