"""Low-contrast detectability: a channelized Hotelling observer (CHO) with Laguerre–Gauss channels.

The FDA's LCD-CT practice (Vaishnav et al., Med. Phys. 2020): many noise realisations of a phantom with and
without a low-contrast insert at a known place; a linear observer reduces each region of interest to a few
channel outputs, weights them by the Hotelling template ``w = S⁻¹ Δv`` (S: mean of the two classes' channel
covariances, Δv: the difference of their means) and scores ``w·v``; the area under the ROC curve of those
scores (AUC) is the detectability. Laguerre–Gauss channels (Barrett et al., JOSA A 1993) are rotationally
symmetric and efficient for round signals on a flat background.

The template is trained and the AUC measured on different images (two-fold cross-validation), since a
template tested on its own training images overstates the AUC. As in the FDA's LCD-CT tool, the split is
drawn many times: the AUC is the mean over random splits, and the interval spans the AUCs of random splits
whose test scores are also bootstrapped, so it carries both which images trained the template and which
tested it. (Bootstrapping the training images instead would bias the AUC low: a template fitted to ~63 %
distinct images is noisier.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import eval_laguerre

__all__ = ["laguerre_gauss_channels", "channel_outputs", "auc", "ObserverResult", "cho_detectability"]


def laguerre_gauss_channels(size: int, width: float, count: int,
                            centre: tuple[float, float] | None = None) -> np.ndarray:
    """Laguerre–Gauss channels ``u_j(r) = (√2/a) exp(−π r²/a²) L_j(2π r²/a²)``, ``j = 0 … count − 1``.

    Args:
        size: edge of the square region of interest in pixels.
        width: the Gaussian width ``a`` in pixels; about the signal's diameter or a little more.
        count: number of channels.
        centre: ``(y, x)`` of the signal in the region (default: its centre, ``(size − 1)/2``).

    Returns:
        float64 ``(count, size, size)``; orthonormal (sum of products ≈ δ) when the region holds them.
    """
    if size < 1 or count < 1 or not width > 0:
        raise ValueError(f"size and count must be >= 1 and width > 0, got {size}, {count}, {width}")
    cy, cx = ((size - 1) / 2,) * 2 if centre is None else centre
    y, x = np.mgrid[:size, :size]
    radial = 2 * np.pi * ((y - cy) ** 2 + (x - cx) ** 2) / width**2
    gauss = np.sqrt(2) / width * np.exp(-radial / 2)
    return np.stack([gauss * eval_laguerre(j, radial) for j in range(count)])


def channel_outputs(images: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """Each image's channel outputs: ``(N, H, W)`` images and ``(J, H, W)`` channels → ``(N, J)``."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 3 or images.shape[1:] != channels.shape[1:]:
        raise ValueError(f"images must be (N, {channels.shape[1]}, {channels.shape[2]}), got {images.shape}")
    return images.reshape(len(images), -1) @ channels.reshape(len(channels), -1).T


def auc(present: np.ndarray, absent: np.ndarray) -> float:
    """Area under the ROC curve of two score samples (Mann–Whitney U / n₁n₀; ties count one half)."""
    present, absent = np.ravel(present), np.ravel(absent)
    if present.size == 0 or absent.size == 0:
        raise ValueError("both score samples must be non-empty")
    order = np.argsort(np.concatenate([present, absent]), kind="stable")
    scores = np.concatenate([present, absent])[order]
    ranks = np.empty(len(scores))
    # Average ranks over runs of equal scores, so a tie counts one half.
    _, first, counts = np.unique(scores, return_index=True, return_counts=True)
    ranks_sorted = np.repeat(first + (counts + 1) / 2, counts)
    ranks[order] = ranks_sorted
    u = ranks[: present.size].sum() - present.size * (present.size + 1) / 2
    return float(u / (present.size * absent.size))


def _template(present: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """Hotelling template in channel space, ``S⁻¹ (mean present − mean absent)``."""
    covariance = (np.cov(present, rowvar=False) + np.cov(absent, rowvar=False)) / 2
    difference = present.mean(axis=0) - absent.mean(axis=0)
    return np.linalg.lstsq(np.atleast_2d(covariance), difference, rcond=None)[0]


def _cross_validated_scores(present: list[np.ndarray], absent: list[np.ndarray]
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Two folds: each fold's template scores the other fold's images; the scores of both, pooled."""
    scores_present, scores_absent = [], []
    for train, test in ((0, 1), (1, 0)):
        w = _template(present[train], absent[train])
        scores_present.append(present[test] @ w)
        scores_absent.append(absent[test] @ w)
    return np.concatenate(scores_present), np.concatenate(scores_absent)


@dataclass(frozen=True)
class ObserverResult:
    """AUC of the CHO with the bounds of its bootstrap interval (``level``, e.g. 0.95)."""

    auc: float
    low: float
    high: float
    level: float


def cho_detectability(present: np.ndarray, absent: np.ndarray, rng: np.random.Generator,
                      resamples: int = 1000, level: float = 0.95) -> ObserverResult:
    """The CHO's cross-validated AUC over random two-fold splits, and its interval.

    Args:
        present: ``(N₁, J)`` channel outputs of signal-present images (from :func:`channel_outputs`).
        absent: ``(N₀, J)`` channel outputs of signal-absent images.
        rng: for the splits and the bootstrap.
        resamples: random splits (at least 1); each also gives one bootstrap of its test scores for the interval.
        level: coverage of the interval.

    Returns:
        :class:`ObserverResult`: the mean AUC over the splits, and the ``level`` percentile interval of the
        split-and-bootstrap AUCs.
    """
    present, absent = np.asarray(present, dtype=np.float64), np.asarray(absent, dtype=np.float64)
    if present.ndim != 2 or absent.ndim != 2 or present.shape[1] != absent.shape[1]:
        raise ValueError(f"channel outputs must be (N, J) with one J, got {present.shape} and {absent.shape}")
    if min(len(present), len(absent)) < 2 * (present.shape[1] + 2):
        raise ValueError(f"need at least {2 * (present.shape[1] + 2)} images per class for {present.shape[1]} "
                         f"channels and two folds, got {len(present)} and {len(absent)}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    split_aucs, spread = [], []
    for _ in range(resamples):
        scores_present, scores_absent = _cross_validated_scores(np.array_split(rng.permutation(present), 2),
                                                                np.array_split(rng.permutation(absent), 2))
        split_aucs.append(auc(scores_present, scores_absent))
        spread.append(auc(rng.choice(scores_present, len(scores_present)),
                          rng.choice(scores_absent, len(scores_absent))))
    low, high = np.quantile(spread, [(1 - level) / 2, (1 + level) / 2])
    return ObserverResult(float(np.mean(split_aucs)), float(low), float(high), level)
