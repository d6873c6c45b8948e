"""Fitting a shipped model to one scan, on that scan alone, within a time budget.

The model is fine-tuned by Recorrupted-to-Recorrupted (:mod:`.recorrupted_pairs`) on the sub-lattices the
denoiser will run it on, with noise drawn like the scan's own (:mod:`.scan_noise`). A slab of the scan (the last
fifth along its longest axis) is never trained on: pairs cut there pick the best checkpoint, and a second, separate
set of pairs decides whether the adapted model is kept at all. It is kept only when it beats the shipped model on
that second set by more than twice the spread of the difference, and only if it keeps small inserted lesions as
well as the shipped model (:mod:`.lesion_check`); otherwise the shipped model stays, and the result says so. The
best checkpoint is not used as it is: the adapted weights go only ``KEPT_SHARE`` of the way from the shipped ones
to it, because no held-back loss on the scan alone tells a fit that helps from one that costs a little.
Measured on MR acquired in k-space (the template, 3 % and 6 %, 2.5 minutes, all layers, Adam): learning rate 2e-5 gains +0.5 dB in about 200 steps, 5e-5 +0.7 dB in about 370; noise drawn at the flat-patch
estimate's level (15–45 % too strong there) loses 0.1–0.4 dB and removes more anatomy, which is why the level is
read from the k-space band when the image shows one.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import Cancelled, InputError
from ..estimation.noise_estimation import estimate_noise
from ..estimation.robust import fill_non_finite
from ..inference.devices import resolve_device
from ..inference.grain import learned_grain, measure_grain
from ..inference.normalization import IntensityNormalizer, guess_modality
from ..inference.outside_field import find_outside_field
from ..estimation.scan_noise import ScanNoise, measure_scan_noise
from ..inference.strength import network_settings
from ..io.volume import Volume
from ..models.model_files import LoadedModel, ModelCard
from ..models.registry import open_model
from .fitted_series import voxels_sha256
from .lesion_check import LesionCheck, check_voxels, lesion_retention
from .recorrupted_pairs import ALPHA, RecorruptedPairs

__all__ = ["Adaptation", "adapt_to_scan", "MIN_SLICES", "MIN_IN_PLANE", "DEFAULT_MINUTES", "FLAT_PATCH_SHARE"]

DEFAULT_MINUTES = 3.0
MIN_SLICES = 17  # thinner volumes run through the network with their slices last (see Denoiser)
MIN_IN_PLANE = 64
LEARNING_RATE = 5e-5
# Noise is drawn at this share of a flat-patch level (the k-space band's level is drawn whole). That level reads
# 15–45 % high on MR acquired in k-space, and added noise stronger than the scan's makes the targets' noise
# anti-correlated with the inputs', so the network learns to remove anatomy with it; weaker noise only leaves some
# noise. Drawn at the full estimate, fits to real MR kept 45 % (chest) of small inserted lesions, against 65 % for
# the shipped model; drawn at 0.7 of it, 76 %.
FLAT_PATCH_SHARE = 0.7
BATCH = 4
PATCH = (16, 32, 32)  # on the sub-lattice
EVALUATE_EVERY = 10  # steps
HELD_BACK = 0.2  # of the longest axis
# Share of the fitted change of the weights that is kept (weight-space ensembling, Wortsman et al., CVPR 2022: the
# fine-tuned and the original network averaged). The held-back loss cannot see what a fit to one scan costs
# against a clean image: on brain2 acquired in k-space (1 coil, 3 %) the fit lowered it by 3.4 % and lost 0.26 dB;
# keeping 0.5 / 0.75 / all of the change: −0.12 / −0.19 / −0.24 dB there, +0.21 / +0.29 / +0.35 dB on the
# template (1 coil, 3 %), 2-minute fits. Neither the network's held-back loss nor the Denoiser's whole output on
# recorrupted held-back copies (−0.9 % there, −1.6 % on the template) tells the two apart.
KEPT_SHARE = 0.5
CHECK_PAIRS = 8  # pairs in each held-back set
# Time kept back for the final pass and the adapted model's lesion check, over their cost at the measured speed
# of the Denoiser on this machine (the crop's smaller tiles run a little slower per voxel than a whole scan's).
_RESERVE_MARGIN = 1.1


@dataclass
class Adaptation:
    """What adapting did.

    Attributes:
        model: the adapted model, or the shipped one when adapting did not help (``kept`` False).
        kept: whether the adapted model beat the shipped one on the held-back part of the scan.
        steps: training steps taken.
        seconds: time spent, preparation and checks included.
        step_seconds: the cost of one step.
        held_back_change: relative change of the held-back loss, adapted against shipped (negative: better).
        held_back_spread: twice the standard error of that change.
        noise: the scan's noise as measured.
        strides: the sub-lattice strides trained on.
        lesions: small lesions kept by the shipped and the adapted model, when the held-back loss had improved
            (None otherwise).
        lesions_unchecked: why small lesions could not be inserted into the scan (nothing is trained then).
    """

    model: LoadedModel
    kept: bool
    steps: int
    seconds: float
    step_seconds: float
    held_back_change: float
    held_back_spread: float
    noise: ScanNoise
    strides: tuple[int, int, int]
    lesions: LesionCheck | None = None
    lesions_unchecked: str = ""

    def describe(self) -> str:
        """One line for the user."""
        change = f"held-back loss {self.held_back_change:+.2%} (± {self.held_back_spread:.2%})"
        trained = f"{self.steps} steps of {self.step_seconds:.2f} s, {change}"
        if self.kept:
            return f"adapted to this scan: {trained}, {self.lesions.describe()}"
        if self.lesions_unchecked:
            return (f"not adapted: a fitted model could not be checked for small lesions ({self.lesions_unchecked}); "
                    "the shipped model is used")
        if self.steps == 0:
            return "not adapted: the time budget leaves no time to train; the shipped model is used"
        if self.lesions is not None:
            return (f"adapting took small lesions: it kept {self.lesions.adapted:.0%} of their amplitude, the shipped "
                    f"model {self.lesions.shipped:.0%} ({trained}); the shipped model is used")
        return f"adapting did not help ({trained}): the shipped model is used"


@dataclass
class _Scan:
    normalized: np.ndarray
    finite: np.ndarray  # the scan in its own units, non-finite voxels filled
    noise_sd: float  # in the scan's units
    modality: str
    level: float | None
    strides: tuple[int, int, int]
    noise: ScanNoise
    start: LoadedModel  # the network the Denoiser runs there: the model, or its sub-lattice twin on sub-lattices


def _prepare(volume: Volume, model: LoadedModel, modality: str) -> _Scan:
    """The scan as the Denoiser will see it: normalised, its noise, its sub-lattice strides and the network
    that runs on them.

    Raises:
        InputError: a volume too small, constant, or without measurable noise.
    """
    name = volume.source
    array = volume.array
    if array.ndim != 3 or array.shape[0] < MIN_SLICES or min(array.shape[1:]) < MIN_IN_PLANE:
        raise InputError(f"{name}: too small to adapt on ({'×'.join(map(str, array.shape[::-1]))} voxels); adapting needs "
                         f"a 3D volume of at least {MIN_IN_PLANE}×{MIN_IN_PLANE}×{MIN_SLICES} voxels")
    as_float = np.asarray(array, dtype=np.float32)
    non_finite = ~np.isfinite(as_float)
    finite, _, _ = fill_non_finite(as_float)
    work = finite
    if float(work.max()) == float(work.min()):
        raise InputError(f"{name}: the image is constant; there is no noise to adapt to")
    chosen = guess_modality(array, volume.modality if modality == "auto" else modality)
    outside = find_outside_field(work, chosen, excluded=non_finite if non_finite.any() else None)
    if outside is not None:
        work = outside.hidden(work)
    normalizer = IntensityNormalizer.fit(work, chosen)
    normalized = normalizer.normalize(work)
    estimate = estimate_noise(normalized)
    if not estimate.sigma > 0 or estimate.patches == 0:
        raise InputError(f"{name}: no measurable noise (no flat region to measure it in); adapting needs a noisy scan")
    strides = (1, 1, 1) if learned_grain(model.card.noise_kinds) else measure_grain(estimate, normalized).strides
    whole = strides == (1, 1, 1)
    start = model.sublattice if not whole and model.sublattice is not None else model
    card = start.card
    fine = estimate.fine_scale_sigma if whole else estimate.sigma
    settings = network_settings("auto", estimate.sigma, fine, normalizer.scale, card.network.noise_level_input,
                                card.conditioning)
    return _Scan(normalized, finite, estimate.sigma * normalizer.scale, chosen, settings.level, strides,
                 measure_scan_noise(normalized, estimate, chosen, FLAT_PATCH_SHARE), start)


def _regions(volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training region and the held-back slab (the last fifth of the longest axis)."""
    axis = int(np.argmax(volume.shape))
    cut = int(round(volume.shape[axis] * (1 - HELD_BACK)))
    return np.split(volume, [cut], axis=axis)


def _losses(network: torch.nn.Module, pairs: list, level: float | None, device: torch.device) -> np.ndarray:
    with torch.inference_mode():
        return np.array([float(torch.mean((network(i.to(device), level) - t.to(device)) ** 2)) for i, t in pairs])


def interpolated_weights(shipped: dict, fitted: dict, share: float) -> dict:
    """Weights ``share`` of the way from ``shipped`` to ``fitted`` (integer buffers are taken from ``fitted``)."""
    return {name: shipped[name] + share * (value - shipped[name]) if value.is_floating_point() else value
            for name, value in fitted.items()}


def _keep_better(network, pairs, level, device, best_loss, best_state):
    """The lower of the best held-back loss so far and the network's now, with its weights."""
    network.eval()
    current = float(_losses(network, pairs, level, device).mean())
    network.train()
    return (current, copy.deepcopy(network.state_dict())) if current < best_loss else (best_loss, best_state)


def adapt_to_scan(
    volume: Volume,
    model: LoadedModel | str | None = None,
    seconds: float = DEFAULT_MINUTES * 60,
    modality: str = "auto",
    device: str = "auto",
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    seed: int = 0,
    keep_time_to_denoise: bool = True,
    refine: bool = True,
) -> Adaptation:
    """Fine-tunes ``model`` to ``volume`` within ``seconds``; with ``keep_time_to_denoise`` the final denoising
    pass is part of the budget (time for it is kept back, estimated from how fast the Denoiser ran the shipped
    model's half of the lesion check). ``refine``: whether the Denoiser that will use the result Wiener-refines
    (the lesion check denoises as it will).

    Raises:
        InputError: a volume that cannot be adapted to (too small, constant, no measurable noise).
        Cancelled: when ``cancel`` returned True.
    """
    started = time.perf_counter()
    base = model if isinstance(model, LoadedModel) else open_model(model)
    if base.card.network.spatial_dims != 3:
        raise InputError(f"{base.card.name}: a planar model; adapting works on 3D models")
    scan = _prepare(volume, base, modality)
    target = resolve_device(device)
    rng = np.random.default_rng(seed)
    train_region, held_region = _regions(scan.normalized)
    multiple = scan.start.card.network.size_multiples
    make = lambda region: RecorruptedPairs(region, scan.noise, scan.strides, PATCH, multiple)  # noqa: E731
    training, held = make(train_region), make(held_region)
    level = None if scan.level is None else training.told_level(scan.level)
    checks = np.random.default_rng(seed + 1)
    choose_set = [held.batch(1, checks) for _ in range(CHECK_PAIRS)]
    decide_set = [held.batch(1, checks) for _ in range(CHECK_PAIRS)]

    network = copy.deepcopy(scan.start.network).float().to(target)
    shipped_state = copy.deepcopy(network.state_dict())
    network.eval()
    base_choose = _losses(network, choose_set, level, target)
    base_decide = _losses(network, decide_set, level, target)
    shape = scan.normalized.shape
    check = (scan.finite, volume, scan.modality, scan.strides, scan.noise_sd, device, refine)
    timed = time.perf_counter()
    try:
        shipped_lesions = lesion_retention(base, *check)
    except ValueError as reason:  # no flat place for a lesion: a fitted model could never be checked
        return Adaptation(base, False, 0, time.perf_counter() - started, 0.0, 0.0, 0.0, scan.noise, scan.strides,
                          None, str(reason))
    per_voxel = (time.perf_counter() - timed) / (2 * check_voxels(shape))
    final_pass = 0.0
    if keep_time_to_denoise:
        final_pass = _RESERVE_MARGIN * per_voxel * (scan.normalized.size + 2 * check_voxels(shape))
    end = started + seconds

    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    best_loss, best_state, steps = float(base_choose.mean()), None, 0
    training_started = time.perf_counter()
    network.train()
    step_seconds = 0.0
    while time.perf_counter() + step_seconds + final_pass < end:
        if cancel is not None and cancel():
            raise Cancelled()
        inputs, targets = training.batch(BATCH, rng)
        loss = torch.mean((network(inputs.to(target), level) - targets.to(target)) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        step_seconds = (time.perf_counter() - training_started) / steps
        if steps % EVALUATE_EVERY == 0:
            best_loss, best_state = _keep_better(network, choose_set, level, target, best_loss, best_state)
        if progress is not None:
            progress(min(1.0, (time.perf_counter() - training_started) / max(end - final_pass - training_started, 1e-9)))

    if steps % EVALUATE_EVERY:
        best_loss, best_state = _keep_better(network, choose_set, level, target, best_loss, best_state)
    change, spread, kept = 0.0, 0.0, False
    if best_state is not None:
        network.load_state_dict(interpolated_weights(shipped_state, best_state, KEPT_SHARE))
        network.eval()
        difference = _losses(network, decide_set, level, target) - base_decide
        change = float(difference.mean() / base_decide.mean())
        spread = float(2 * difference.std(ddof=1) / np.sqrt(len(difference)) / base_decide.mean())
        kept = change < 0 and change + spread < 0
    adapted, lesions = base, None
    if kept:
        network = network.cpu().eval()
        if cancel is not None and cancel():
            raise Cancelled()
        candidate = LoadedModel(network, scan.start.card, scan.start.path, "", None)
        lesions = LesionCheck(shipped=shipped_lesions, adapted=lesion_retention(candidate, *check))
        kept = lesions.passed
        if kept:
            card = _adapted_card(scan.start, volume, scan, steps, step_seconds, time.perf_counter() - started,
                                 change, lesions)
            adapted = LoadedModel(network, card, Path(volume.source or "adapted"), "", None)
    if progress is not None:
        progress(1.0)
    return Adaptation(adapted, kept, steps, time.perf_counter() - started, step_seconds, change, spread,
                      scan.noise, scan.strides, lesions)


def _adapted_card(base: LoadedModel, volume: Volume, scan: _Scan, steps: int, step_seconds: float, seconds: float,
                  change: float, lesions: LesionCheck) -> ModelCard:
    source = Path(str(volume.source)).name or "the input"
    adaptation = {
        "method": f"Recorrupted-to-Recorrupted (alpha {ALPHA}) on the scan alone, on its "
                  f"{'×'.join(map(str, scan.strides))} (z×y×x) sub-lattices; Adam {LEARNING_RATE:g}, all layers, "
                  f"batches of {BATCH} patches of {'×'.join(map(str, PATCH))} sub-lattice voxels; the best checkpoint's "
                  f"change of the weights kept at {KEPT_SHARE:g}",
        "kept_share": KEPT_SHARE,
        "from": base.card.name,
        "from_sha256": base.sha256,
        "steps": steps,
        "step_seconds": round(step_seconds, 3),
        "seconds": round(seconds, 1),
        "noise": scan.noise.describe(),
        "held_back_loss_change": round(change, 5),
        "lesions_kept": round(lesions.adapted, 3),
        "shipped_lesions_kept": round(lesions.shipped, 3),
        "input": source,
        "input_voxels_sha256": voxels_sha256(volume.array),
    }
    return replace(
        base.card,
        name=f"{base.card.name}-adapted",
        description=f"{base.card.name} fitted to the noise of one series ({source})",
        modalities=[scan.modality],
        training={"adaptation": adaptation},
        metrics={},
        intended_use=f"The series it was fitted to ({source}) only. Research use only; not for diagnosis.",
    )
