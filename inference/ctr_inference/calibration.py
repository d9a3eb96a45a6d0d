"""Correction of predicted CTR for negative downsampling at training time.

CTR models are often trained on every click but only a share ``w`` of the
non-clicks. Keeping a share ``w`` of the negatives multiplies the odds the
model learns by ``1 / w``, so its raw prediction ``p`` maps back to the full
traffic by multiplying the odds by ``w``:

    p' = p / (p + (1 - p) / w)

The rate travels in the bundle metadata as ``sampling.negative_rate``; a
bundle without it was trained on all rows.
"""

from __future__ import annotations

import numpy as np

from ctr_inference.errors import BundleIncompatibleError


def correct_negative_sampling(predictions: np.ndarray, negative_rate: float) -> np.ndarray:
    """Map predictions of a model trained on downsampled negatives back to the full traffic.

    Raises:
        ValueError: ``negative_rate`` is not in (0, 1].
    """
    if not 0 < negative_rate <= 1:
        raise ValueError(f"negative_rate must be in (0, 1], got {negative_rate}")
    predictions = np.asarray(predictions, dtype=np.float64)
    if negative_rate == 1:
        return predictions
    return predictions / (predictions + (1.0 - predictions) / negative_rate)


def negative_rate_of(metadata: dict) -> float:
    """Return the negative sampling rate recorded in bundle metadata (1.0 when none is recorded).

    Raises:
        BundleIncompatibleError: the recorded rate is not a number in (0, 1].
    """
    rate = (metadata.get("sampling") or {}).get("negative_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise BundleIncompatibleError(
            f"bundle metadata has sampling.negative_rate {rate!r}; expected a number in (0, 1]"
        )
    return float(rate)
