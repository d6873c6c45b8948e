"""Measured, not shipped: Neighbor2Neighbor (Huang et al., CVPR 2021) on sub-lattices as the scan-adaptation loss, against R2R.

Same structure as ``MedicalDenoiseLib.adaptation.fine_tune.adapt_to_scan`` (its ``_prepare``, ``_regions``,
held-back slab, best-checkpoint choice every 10 steps and keep/decide rule, Adam 5e-5, all layers, batch 4, the
time budget with the final pass kept back), with the training pairs made by Neighbor2Neighbor on each sub-lattice
image S: 2×2 in-plane cells, two different adjacent positions per cell → g1(S), g2(S);
loss = ‖f(g1) − g2‖² + γ‖f(g1) − g2 − (g1(f(S)) − g2(f(S)))‖², f(S) without gradient.

* The network is told the scan's own level (``scan.level``, as at inference): g1 carries the scan's noise unchanged.
* Held-back sets: 8 + 8 N2N pairs (g1, g2) with fixed masks from the held-back slab; their loss is the
  reconstruction term ‖f(g1) − g2‖² (no noise model needed). The R2R held-back sets of the library (same seed)
  are also scored as a second opinion.
* ``r2r`` mode is a line-by-line replica of adapt_to_scan (same seeds, same sets) so the adapted network can be
  forced out even when the rule would not keep it.

Writes one JSON line per (case, method) to ``--out``; ``--report`` turns those lines into markdown.
Usage: ``python benchmarks/adapt_neighbor2neighbor.py --reference mni-kspace-1coil-0.03 --seconds 120 --out runs/n2n.jsonl``,
``--real mr_chest_tfl3d_seg3d.nii.gz ...`` for real scans, ``--report FILE...`` for the table (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "MedicalDenoise"))

from MedicalDenoiseLib.adaptation.fine_tune import (BATCH, EVALUATE_EVERY, LEARNING_RATE, PATCH, CHECK_PAIRS,  # noqa: E402
                                                    _keep_better, _losses, _prepare, _regions)
from MedicalDenoiseLib.adaptation.recorrupted_pairs import RecorruptedPairs  # noqa: E402
from MedicalDenoiseLib.inference.sublattice import split  # noqa: E402
from MedicalDenoiseLib.inference.denoiser import Denoiser  # noqa: E402
from MedicalDenoiseLib.models.model_files import LoadedModel  # noqa: E402
from MedicalDenoiseLib.models.registry import open_model  # noqa: E402

MODEL = "autoencoder-v2"
# Final pass kept back: 1.6 × a step's cost per voxel / 3 (the probe measured every method the same way)
_FINAL_PASS_FACTOR = 1.6
N2N_PATCH = (16, 64, 64)  # S on the sub-lattice; g1/g2 are (16, 32, 32), R2R's patch
# Neighbour positions in a 2×2 cell (index 2·dy + dx): the two that share an edge.
_NEIGHBOURS = np.array([[1, 2], [0, 3], [0, 3], [1, 2]])


def _cells(x: torch.Tensor) -> torch.Tensor:
    """(B, C, d, h, w) -> (B, C, d, h/2, w/2, 4), last axis the position 2·dy + dx in the 2×2 cell."""
    b, c, d, h, w = x.shape
    return x.reshape(b, c, d, h // 2, 2, w // 2, 2).permute(0, 1, 2, 3, 5, 4, 6).reshape(b, c, d, h // 2, w // 2, 4)


def pick(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(_cells(x), -1, index.unsqueeze(-1)).squeeze(-1)


class NeighbourPairs:
    """Sub-lattice patches S and Neighbor2Neighbor masks drawn from a region of the normalised volume."""

    def __init__(self, volume, strides, patch, multiple):
        self.volume, self.strides, self.patch, self.multiple = volume, strides, patch, multiple

    def grid_patch(self):
        sizes = []
        for axis, (size, stride, multiple, extent) in enumerate(zip(self.patch, self.strides, self.multiple,
                                                                     self.volume.shape)):
            step = stride * multiple * (2 if axis else 1)  # g1 is half of S in-plane and must fit the network
            sizes.append(max(step, min(size * stride, extent) // step * step))
        return tuple(sizes)

    def sub_patch(self):
        return tuple(g // s for g, s in zip(self.grid_patch(), self.strides))

    def draw(self, count, rng):
        """``(S, index1, index2)``: S (count, 1, d, h, w); indices (count, 1, d, h/2, w/2) into the 2×2 cells."""
        d, h, w = self.grid_patch()
        lattices = int(np.prod(self.strides))
        images = []
        for _ in range(count):
            corner = [int(rng.integers(0, extent - size + 1)) for extent, size in zip(self.volume.shape, (d, h, w))]
            y = self.volume[corner[0]:corner[0] + d, corner[1]:corner[1] + h, corner[2]:corner[2] + w]
            images.append(split(np.ascontiguousarray(y), self.strides)[int(rng.integers(lattices))])
        s = np.stack(images)[:, None]
        cells = (count, 1, s.shape[2], s.shape[3] // 2, s.shape[4] // 2)
        first = rng.integers(0, 4, size=cells)
        second = _NEIGHBOURS[first, rng.integers(0, 2, size=cells)]
        return torch.from_numpy(s), torch.from_numpy(first), torch.from_numpy(second)

    def pairs(self, count, rng):
        s, i1, i2 = self.draw(count, rng)
        return pick(s, i1), pick(s, i2)


def adapt(volume, method: str, seconds: float, gamma: float = 0.0, seed: int = 0, log=print) -> dict:
    """Adapts like adapt_to_scan; returns the adapted LoadedModel (always, kept or not) and the figures."""
    started = time.perf_counter()
    base = open_model(MODEL)
    scan = _prepare(volume, base, "auto")
    target = torch.device("cpu")
    rng = np.random.default_rng(seed)
    train_region, held_region = _regions(scan.normalized)
    multiple = scan.start.card.network.size_multiples
    make_r2r = lambda region: RecorruptedPairs(region, scan.noise, scan.strides, PATCH, multiple)  # noqa: E731
    r2r_train, r2r_held = make_r2r(train_region), make_r2r(held_region)
    r2r_level = None if scan.level is None else r2r_train.told_level(scan.level)
    checks = np.random.default_rng(seed + 1)  # the library's held-back R2R sets, exactly
    r2r_choose = [r2r_held.batch(1, checks) for _ in range(CHECK_PAIRS)]
    r2r_decide = [r2r_held.batch(1, checks) for _ in range(CHECK_PAIRS)]

    network = copy.deepcopy(scan.start.network).float().to(target)
    network.eval()
    if method == "r2r":
        level, choose_set, decide_set = r2r_level, r2r_choose, r2r_decide
        voxels = BATCH * int(np.prod(r2r_train.grid_patch()))  # forward-pass voxels of a step / 3
    else:
        level = scan.level
        n2n_train = NeighbourPairs(train_region, scan.strides, N2N_PATCH, multiple)
        n2n_held = NeighbourPairs(held_region, scan.strides, N2N_PATCH, multiple)
        n2n_checks = np.random.default_rng(seed + 2)
        choose_set = [n2n_held.pairs(1, n2n_checks) for _ in range(CHECK_PAIRS)]
        decide_set = [n2n_held.pairs(1, n2n_checks) for _ in range(CHECK_PAIRS)]
        s_vox = int(np.prod(n2n_train.sub_patch()))
        # a step: forward + backward on g1 (~3 forwards of S/4) and one forward on S, in sub-lattice voxels
        voxels = BATCH * (3 * s_vox // 4 + s_vox) / 3
    base_choose = _losses(network, choose_set, level, target)
    base_decide = _losses(network, decide_set, level, target)
    base_r2r_decide = _losses(network, r2r_decide, r2r_level, target)
    end = started + seconds

    optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
    best_loss, best_state, best_step, steps = float(base_choose.mean()), None, 0, 0
    training_started = time.perf_counter()
    network.train()
    step_seconds, final_pass = 0.0, 0.0
    while time.perf_counter() + step_seconds + final_pass < end:
        if method == "r2r":
            inputs, targets = r2r_train.batch(BATCH, rng)
            loss = torch.mean((network(inputs, level) - targets) ** 2)
        else:
            s, i1, i2 = n2n_train.draw(BATCH, rng)
            with torch.no_grad():
                fs = network(s, level)
            g1, g2 = pick(s, i1), pick(s, i2)
            out = network(g1, level)
            diff = out - g2
            loss = torch.mean(diff ** 2) + gamma * torch.mean((diff - (pick(fs, i1) - pick(fs, i2))) ** 2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        step_seconds = (time.perf_counter() - training_started) / steps
        final_pass = _FINAL_PASS_FACTOR * step_seconds / 3 / voxels * scan.normalized.size
        if steps % EVALUATE_EVERY == 0:
            previous = best_loss
            best_loss, best_state = _keep_better(network, choose_set, level, target, best_loss, best_state)
            best_step = steps if best_loss < previous else best_step
    if steps % EVALUATE_EVERY:
        previous = best_loss
        best_loss, best_state = _keep_better(network, choose_set, level, target, best_loss, best_state)
        best_step = steps if best_loss < previous else best_step

    result = dict(method=method, gamma=gamma, steps=steps, step_seconds=step_seconds, best_step=best_step,
                  strides=list(scan.strides), level=scan.level, noise=scan.noise.describe(),
                  choose_change=float(best_loss / base_choose.mean() - 1))
    change, spread, kept, r2r_change, r2r_spread = 0.0, 0.0, False, 0.0, 0.0
    if best_state is not None:
        network.load_state_dict(best_state)
    else:
        # no checkpoint beat the shipped model on the choose set: force out the last one anyway (flagged)
        result["forced_last"] = True
    network.eval()
    difference = _losses(network, decide_set, level, target) - base_decide
    change = float(difference.mean() / base_decide.mean())
    spread = float(2 * difference.std(ddof=1) / np.sqrt(len(difference)) / base_decide.mean())
    kept = best_state is not None and change < 0 and change + spread < 0
    rd = _losses(network, r2r_decide, r2r_level, target) - base_r2r_decide
    r2r_change = float(rd.mean() / base_r2r_decide.mean())
    r2r_spread = float(2 * rd.std(ddof=1) / np.sqrt(len(rd)) / base_r2r_decide.mean())
    result.update(held_back_change=change, held_back_spread=spread, kept=bool(kept),
                  r2r_rule_change=r2r_change, r2r_rule_spread=r2r_spread,
                  r2r_rule_kept=bool(best_state is not None and r2r_change < 0 and r2r_change + r2r_spread < 0),
                  adapt_seconds=time.perf_counter() - started)
    network = network.cpu().eval()
    model = LoadedModel(network, scan.start.card, Path("adapted"), "", None)
    log(f"  {method} γ={gamma}: {steps} steps × {step_seconds:.2f} s, best at {best_step}, held-back "
        f"{change:+.2%} ± {spread:.2%} kept={kept}; R2R rule {r2r_change:+.2%} ± {r2r_spread:.2%}")
    return model, result


# ---------------------------------------------------------------- evaluation (as benchmarks/adapt.py)

def _denoiser(method: str, volume, seconds: float) -> tuple[Denoiser, dict]:
    """The shipped model, or the model fitted by ``method`` (with what fitting did)."""
    if method == "shipped":
        return Denoiser(MODEL, device="cpu"), {}
    model, extra = adapt(volume, method.split("-")[0], seconds, _gamma(method))
    return Denoiser(model, device="cpu"), extra


def reference_case(key, data, seconds, methods, emit):
    from realistic_acquisitions import SETTINGS, SOURCES, acquire, prepare
    from sublattice import _volume
    from MedicalDenoiseLib.evaluation.metrics import psnr, residual_structure_correlation
    setting = next(s for s in SETTINGS if s.key == key)
    prepared = prepare(next(s for s in SOURCES if s.key == setting.source), data)
    realised = acquire(setting, prepared, 7)
    noisy, clean, fg, rng = realised.noisy, realised.clean, prepared.foreground, prepared.data_range
    volume = _volume(noisy, prepared.spacing, prepared.source.modality)
    emit(dict(case=key, method="input", psnr=psnr(clean, noisy, rng, fg), shape=list(noisy.shape)))
    for method in methods:
        denoiser, extra = _denoiser(method, volume, seconds)
        out = denoiser.denoise(volume).volume.array
        emit({**extra, "case": key, "method": method, "psnr": psnr(clean, out, rng, fg),
              "r": residual_structure_correlation(clean, noisy, out)})


def real_case(name, data, seconds, methods, emit):
    from adapt import _real_volume
    from sublattice import _volume
    from MedicalDenoiseLib.evaluation.lesion_retention import measure_retention
    from MedicalDenoiseLib.evaluation.reference_free import (edge_sharpness, flat_region_mask,
                                                             flat_region_noise_sd, foreground_mask, strong_edge_mask)
    array, spacing, modality = _real_volume(data / name)
    low, high = np.percentile(array, [1, 99.5])
    foreground = foreground_mask((array - low) / max(high - low, 1e-6))
    flat, edges = flat_region_mask(array, foreground), strong_edge_mask(array, foreground)
    noise_in, edge_in = flat_region_noise_sd(array, flat), edge_sharpness(array, edges)
    volume = _volume(array, spacing, modality)
    for method in methods:
        denoiser, extra = _denoiser(method, volume, seconds)
        run = lambda image, d=denoiser: d.denoise(_volume(image, spacing, modality)).volume.array  # noqa: E731
        out = run(array)
        lesions = measure_retention(run, array, np.random.default_rng(0))
        emit({**extra, "case": name, "method": method, "shape": list(array.shape),
              "noise_left": flat_region_noise_sd(out, flat) / noise_in,
              "edges": edge_sharpness(out, edges) / edge_in, "lesions": lesions})


def _gamma(method: str) -> float:
    return float(method.split("-g")[1]) if "-g" in method else 0.0


def report(lines: list[dict]) -> str:
    rows = ["| case | method | steps (× s) | best step | PSNR fg / r — or — noise left / edges / lesions kept | "
            "own held-back rule (kept?) | R2R held-back rule on it (kept?) |", "|---|---|---|---|---|---|---|"]
    for x in lines:
        if x["method"] == "input":
            rows.append(f"| {x['case']} | input | | | {x['psnr']:.2f} dB | | |")
            continue
        fig = (f"{x['psnr']:.2f} dB / r {x['r']:+.3f}" if "psnr" in x else
               f"{x['noise_left']:.2f} / {x['edges']:.2f} / {x['lesions']:.0%}")
        if x["method"] == "shipped":
            rows.append(f"| {x['case']} | shipped | | | {fig} | | |")
            continue
        own = f"{x['held_back_change']:+.2%} ± {x['held_back_spread']:.2%} ({'yes' if x['kept'] else 'no'})"
        r2r = f"{x['r2r_rule_change']:+.2%} ± {x['r2r_rule_spread']:.2%} ({'yes' if x['r2r_rule_kept'] else 'no'})"
        rows.append(f"| {x['case']} | {x['method']} | {x['steps']} × {x['step_seconds']:.2f} | {x['best_step']} | "
                    f"{fig} | {own} | {r2r} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", nargs="*", default=[])
    parser.add_argument("--real", nargs="*", default=[])
    parser.add_argument("--methods", nargs="+", default=["shipped", "r2r", "n2n-g1", "n2n-g2"])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.jsonl"))
    parser.add_argument("--report", nargs="*", type=Path)
    args = parser.parse_args()
    if args.report is not None:
        lines = [json.loads(l) for p in args.report for l in p.read_text().splitlines() if l.strip()]
        print(report(lines))
        return 0
    torch.set_num_threads(1)

    def emit(row):
        print(json.dumps(row), flush=True)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")

    for key in args.reference:
        print(f"reference {key}", file=sys.stderr, flush=True)
        reference_case(key, args.data, args.seconds, args.methods, emit)
    for name in args.real:
        print(f"real {name}", file=sys.stderr, flush=True)
        real_case(name, args.data, args.seconds, args.methods, emit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
