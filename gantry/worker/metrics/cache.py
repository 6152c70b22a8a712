"""What metrics compute once and reuse across jobs (a classifier trained on a data set, a data set's
Inception features), kept in object storage under `cache/` (gantry.jobs.keys.cache_key), where every
worker finds it.

Entries are named by what they were computed from (a content hash), so one is never stale: a
changed input is another name. Two jobs that compute the same entry at once write the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from gantry.jobs.keys import cache_key
from gantry.jobs.storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cache:
    get_bytes: Callable[[str], bytes]  # object key -> bytes; ObjectNotFound when absent
    put_bytes: Callable[[str, bytes], object]  # (object key, bytes) -> written

    @classmethod
    def of_store(cls, objects: ObjectStore) -> Cache:
        """A cache straight on an object store (benches, tests); jobs go through their context."""
        return cls(objects.get_bytes, objects.put_bytes)

    def get(self, name: str) -> bytes | None:
        try:
            return self.get_bytes(cache_key(name))
        except ObjectNotFound:
            return None

    def put(self, name: str, data: bytes) -> None:
        self.put_bytes(cache_key(name), data)
        log.info("cached %s (%d bytes)", cache_key(name), len(data))
