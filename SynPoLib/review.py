"""Which segmented slices a person should look at first.

SynPo paints every slice it is given; a clinician wants to know where it is least sure.
A slice is flagged when it was rejected, came out empty, scored far below the run's
other slices, or changed area abruptly against both neighbours.
"""

from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

#: robust z-score (median / 1.4826 MAD) below which a slice's score is an outlier   [G]
SCORE_OUTLIER_Z = 3.0
#: area ratio to BOTH neighbours beyond which a slice is a jump (x2 or /2)          [G]
AREA_JUMP = 2.0


def review_flags(records: Sequence) -> Dict[int, str]:
    """slice index -> reason, for the slices worth a second look (support slices never)."""
    segmented = sorted((r for r in records if r.support_index >= 0), key=lambda r: r.index)
    flags: Dict[int, str] = {}
    scores = np.array([r.score for r in segmented if np.isfinite(r.score)], dtype=float)
    low = -np.inf
    if len(scores) >= 5:
        median = float(np.median(scores))
        mad = float(np.median(np.abs(scores - median))) * 1.4826
        if mad > 0:
            low = median - SCORE_OUTLIER_Z * mad
    for n, r in enumerate(segmented):
        if not r.accepted:
            flags[r.index] = "rejected: score below the acceptance threshold"
        elif r.pixels == 0:
            flags[r.index] = "empty"
        elif np.isfinite(r.score) and r.score < low:
            flags[r.index] = f"low score ({r.score:.2f})"
        elif 0 < n < len(segmented) - 1:
            before, after = segmented[n - 1], segmented[n + 1]
            if before.pixels > 0 and after.pixels > 0 and before.index == r.index - 1 and after.index == r.index + 1:
                ratios = [r.pixels / before.pixels, r.pixels / after.pixels]
                if all(x > AREA_JUMP for x in ratios) or all(x < 1.0 / AREA_JUMP for x in ratios):
                    flags[r.index] = "area jumps against both neighbours"
    return flags
