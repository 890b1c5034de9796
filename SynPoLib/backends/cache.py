"""A backend wrapper that remembers encoder passes, for runs that revisit slices.

Evaluation runs several methods over the same slices; with this wrapper each slice is
encoded once, whatever the number of methods. Keys are the image bytes' digest, so a
cached answer is only ever reused for the identical image.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import List, Sequence

import numpy as np

from .base import Backend, EncodedSlice, Prediction


class CachedBackend(Backend):
    """Delegates to ``inner``; ``encode`` answers repeated images from an LRU cache."""

    def __init__(self, inner: Backend, max_items: int = 256) -> None:
        super().__init__()
        self.inner = inner
        self.max_items = int(max_items)
        self._cache: "OrderedDict[str, EncodedSlice]" = OrderedDict()
        self.name = inner.name
        self.preset = inner.preset
        self.encoder_calls = inner.encoder_calls
        self.hits = 0
        self.multimask_max_points = inner.multimask_max_points

    @property
    def feature_keys(self) -> Sequence[str]:
        return self.inner.feature_keys

    @property
    def device(self) -> str:
        return self.inner.device

    @staticmethod
    def _key(image: np.ndarray) -> str:
        arr = np.ascontiguousarray(image)
        return hashlib.blake2b(arr.tobytes() + str(arr.shape).encode(), digest_size=16).hexdigest()

    def encode(self, images: Sequence[np.ndarray]) -> List[EncodedSlice]:
        keys = [self._key(im) for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        # The same image twice in one batch is encoded once.
        unique = list(dict.fromkeys(keys[i] for i in missing))
        first_of = {k: next(i for i in missing if keys[i] == k) for k in unique}
        fresh = self.inner.encode([images[first_of[k]] for k in unique]) if unique else []
        for k, enc in zip(unique, fresh):
            self._cache[k] = enc
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        self.hits += len(keys) - len(unique)
        out = []
        for k in keys:
            enc = self._cache.get(k) or dict(zip(unique, fresh))[k]
            if k in self._cache:
                self._cache.move_to_end(k)
            out.append(enc)
        return out

    def predict(self, encoded: EncodedSlice, **kwargs) -> Prediction:
        return self.inner.predict(encoded, **kwargs)

    def clear(self) -> None:
        self._cache.clear()
