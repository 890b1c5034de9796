"""One encoder pass per query slice, whatever the number of structures a run segments.

The backend's encoder pass is by far the costliest step of every SAM-family mode
(LiteMedSAM on one CPU core: about 2 s a slice against 0.15 s for SynPo's own work and
the decoder). Several structures of one volume see the same query slices, so a
multi-structure run encodes each slice once and hands the same
:class:`~SynPoLib.backends.base.EncodedSlice` to every structure that walks over it.

Structures labelled on the same slice(s) walk the same chains and are visited in
lockstep, so an encoded slice is used by all of them at once and dropped. Structures
whose walks differ (other support slices) use a slice at different times: the slice
is kept until the last walk that announced it (:meth:`SharedEncoder.expect`) has used
or released it, up to ``capacity`` slices (beyond that the oldest is dropped and
encoded again if asked for), so memory stays bounded.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from typing import Callable, Dict, Hashable, Iterable, List, Sequence, Tuple

import numpy as np

from ..backends.base import Backend, EncodedSlice

#: encoded query slices kept for walks that use them later; LiteMedSAM holds 4 MB a
#: slice, SAM 2.1 + DINOv2 about 30 MB: 8 slices bound the extra memory of a
#: multi-structure run to what one 8-slice batch holds                              [G]
SHARED_ENCODINGS = 8


class SharedEncoder:
    """Encoded query slices, shared by every walk of a run that asks for the same slice."""

    def __init__(self, backend: Backend, image: Callable[[int], np.ndarray],
                 capacity: int = SHARED_ENCODINGS) -> None:
        self.backend = backend
        self.image = image
        self.capacity = max(int(capacity), 1)
        self._cache: "OrderedDict[int, EncodedSlice]" = OrderedDict()
        self._uses: Counter = Counter()
        #: slices encoded by the backend (a slice encoded twice counts twice)
        self.passes = 0
        #: slices answered from the cache
        self.hits = 0

    def expect(self, indices: Iterable[int]) -> None:
        """A walk will ask for each of ``indices`` once (it holds the slice until used)."""
        self._uses.update(int(i) for i in indices)

    def release(self, index: int) -> None:
        """A walk is done with slice ``index`` (used it, or stopped before it)."""
        index = int(index)
        self._uses[index] -= 1
        if self._uses[index] <= 0:
            del self._uses[index]
            self._cache.pop(index, None)

    def encode(self, indices: Sequence[int]) -> Tuple[List[EncodedSlice], List[float]]:
        """The encoded slices, each encoded at most once while a walk still expects it.

        Returns the encodings and, per slice, the encoder seconds it cost now (its share
        of the batch; 0 for a slice encoded before).
        """
        indices = [int(i) for i in indices]
        missing = list(dict.fromkeys(i for i in indices if i not in self._cache))
        cost: Dict[int, float] = {}
        fresh: Dict[int, EncodedSlice] = {}
        if missing:
            t = time.perf_counter()
            encoded = self.backend.encode([self.image(i) for i in missing])
            share = (time.perf_counter() - t) / len(missing)
            self.passes += len(missing)
            for i, enc in zip(missing, encoded):
                fresh[i] = enc
                cost[i] = share
                if self._uses.get(i, 0) > 0:
                    self._cache[i] = enc
        self.hits += sum(1 for i in indices if i not in fresh)
        out = []
        for i in indices:
            enc = fresh.get(i)
            if enc is None:
                enc = self._cache[i]
                self._cache.move_to_end(i)
            out.append(enc)
        keep = set(indices)
        for old in list(self._cache):
            if len(self._cache) <= self.capacity:
                break
            if old not in keep:
                del self._cache[old]
        return out, [cost.get(i, 0.0) for i in indices]


class SupportEncodings:
    """Support slices encoded once per run, whatever the number of structures labelled on them."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._cache: Dict[Hashable, EncodedSlice] = {}
        self.passes = 0

    def get(self, key: Hashable, image: Callable[[], np.ndarray]) -> EncodedSlice:
        """The encoding of the support image ``key`` names (made by ``image()`` when new)."""
        if key not in self._cache:
            self._cache[key] = self.backend.encode([image()])[0]
            self.passes += 1
        return self._cache[key]


__all__ = ["SHARED_ENCODINGS", "SharedEncoder", "SupportEncodings"]
