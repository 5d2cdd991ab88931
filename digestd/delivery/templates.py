"""The stored templates of the digests being sent, kept in memory by the sender.

Claims come in digest order, so the sender needs a few digests at a time; an LRU of
:data:`TEMPLATE_CACHE` bounds the memory (a loaded template is 20-90 KB) whatever the
list size. Loading is a read and a decompression, never a render: the planner rendered
each digest when it created it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from digestd.mail.digests import DigestRenderer, StoredDigest, ready_templates

TEMPLATE_CACHE = 512


class TemplateCache:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        renderer: DigestRenderer,
        size: int = TEMPLATE_CACHE,
    ) -> None:
        self.sessions = sessions
        self.renderer = renderer  # only for digests planned before templates were stored
        self.size = size
        self.loaded = 0  # templates read from the database (a digest may be read again)
        self._digests: OrderedDict[int, StoredDigest] = OrderedDict()

    def get(self, ids: Iterable[int]) -> dict[int, StoredDigest]:
        """Each digest's stored template (blocking: call it off the event loop)."""
        wanted = set(ids)
        found = {i: self._digests[i] for i in wanted if i in self._digests}
        for digest_id in found:
            self._digests.move_to_end(digest_id)
        missing = wanted - found.keys()
        if missing:
            with self.sessions.begin() as session:
                loaded = ready_templates(session, self.renderer, missing)
            self.loaded += len(loaded)
            for digest_id, digest in loaded.items():
                found[digest_id] = self._digests[digest_id] = digest
            while len(self._digests) > self.size:
                self._digests.popitem(last=False)
        return found
