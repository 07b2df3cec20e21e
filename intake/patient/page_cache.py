"""Pages that differ only in a few short values: rendered once, then filled in per request.

The blank form a first visit gets (``GET /``, ``GET /embed``) differs from every other first
visit's only in the CSRF token, the form's idempotency token and where the visit came from;
the confirmation page only in the reference, the withdrawal code and two dates. Rendering
them through Jinja (the authorization, dozens of macro calls and translated strings, ~300
options on the form) is the largest part of a visit's CPU. So each such page is rendered once
per variant (language, address, consent version, ...) with a random placeholder for each
value, split at the placeholders, and later requests only join the pieces around their own
values, HTML-escaped as the template would have escaped them.

The values must be ones that read the same wherever the template puts them: tokens, codes,
references and formatted dates (no character that a URL would quote differently). A
placeholder that does not appear in the page disables the cache for that variant (the page
is then rendered whole each time), so a template change can make a page slower but never
wrong; tests compare filled pages with full renderings, byte for byte.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from flask import current_app
from markupsafe import escape

CACHE_EXTENSION = "intake.page_cache"

Render = Callable[[Mapping[str, str]], str]


@dataclass(frozen=True)
class SplitPage:
    pieces: tuple[str, ...]  # the page cut at its placeholders: one more piece than holes
    holes: tuple[str, ...]  # which value goes between pieces[i] and pieces[i + 1]

    def fill(self, values: Mapping[str, str]) -> str:
        escaped = {name: str(escape(value)) for name, value in values.items()}
        parts = [self.pieces[0]]
        for hole, piece in zip(self.holes, self.pieces[1:], strict=True):
            parts.append(escaped[hole])
            parts.append(piece)
        return "".join(parts)


def split_at(page: str, placeholders: Mapping[str, str]) -> SplitPage | None:
    """``page`` cut at every placeholder, or None if one of them does not appear in it."""
    if not all(placeholder in page for placeholder in placeholders.values()):
        return None
    name_of = {placeholder: name for name, placeholder in placeholders.items()}
    cut = re.split("(" + "|".join(map(re.escape, name_of)) + ")", page)
    return SplitPage(tuple(cut[0::2]), tuple(name_of[found] for found in cut[1::2]))


def cached_page(key: Hashable, values: Mapping[str, str], render: Render) -> str:
    """The page of variant ``key`` filled with ``values``; ``render(values)`` makes it.

    ``render`` is called once per variant with placeholders for values, and again with the
    real values whenever the variant cannot be cached.
    """
    cache: dict[Hashable, SplitPage | None] = current_app.extensions.setdefault(CACHE_EXTENSION, {})
    if key not in cache:
        placeholders = {name: f"hole{secrets.token_hex(16)}" for name in values}
        cache[key] = split_at(render(placeholders), placeholders)
    page = cache[key]
    if page is None:
        return render(values)
    return page.fill(values)
