"""The typed description of one training run: read from YAML, overridden by command-line flags, saved in
every checkpoint and summarised in the exported model's card.

Each section is a frozen dataclass whose ``__post_init__`` checks its values and raises a
:class:`~training.errors.ConfigError` that names the key, the rule and the value. Unknown keys are errors
too (a typo must not silently fall back to a default).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from MedicalDenoiseLib.models.networks import NetworkConfig
from MedicalDenoiseLib.noise.kinds import NOISE_KINDS
from MedicalDenoiseLib.noise.parameter_ranges import range_from_spec
from MedicalDenoiseLib.inference.normalization import MODALITIES

from .config_checks import check_choice, check_ints, check_number, check_span, set_field
from .errors import ConfigError

__all__ = [
    "MODES", "DataConfig", "ValidationConfig", "NoiseConfig", "AugmentConfig", "OptimConfig",
    "SelfSupervisedConfig", "GANConfig", "RunConfig", "TrainConfig",
    "load_config", "config_from_dict", "config_to_dict",
]

MODES = ("synthetic", "paired", "self-supervised", "gan")
_DEFAULT_KINDS = {"ct": ("gaussian", "ct"), "mr": ("gaussian", "rician"), "us": ("gaussian", "speckle")}


@dataclass(frozen=True)
class DataConfig:
    """Where patches come from.

    Attributes:
        patch_size: (z, y, x) voxels; each a multiple of the network's ``size_multiple``. Volumes with
            fewer slices get flatter, wider patches of about the same voxel count (thick-slice scans).
        batch_size: patches per step (per process under torchrun).
        modality: "auto" (DICOM tag, else the intensities: CT or MR), or "ct", "mr", "us" for all volumes.
        modality_patterns: file-name glob → modality, checked before ``modality`` (e.g. ``{"us_*": "us"}``).
        include: names (relative to the data folder) or globs of the volumes to use; empty: every volume. Each
            must match a volume, so a recipe that names its volumes cannot silently train on fewer.
        exclude: file names (relative to the data folder) or globs to leave out.
        foreground_threshold: a voxel is foreground when its normalised intensity is above this.
        foreground_probability: chance that a patch is centred on foreground (else anywhere).
        phantom_fraction: share of synthetic-noise batches made of noise-free procedural phantoms
            (``training/synthetic_phantoms.py``) instead of patches of the volumes. Real volumes carry their own
            noise and teach the network to keep some; exactly clean phantoms teach flat regions to come out
            flat and small spots to survive.
        block_average: average each volume over blocks of this many voxels along every axis of at least 64
            voxels before any patch is cut (1: off). The volume's own noise, which
            would otherwise be taught as anatomy to keep, drops about ``sqrt(voxels per block)``-fold (white
            noise; less where it is correlated over more than a block); the spacing grows by the factor, so
            anatomy is finer on the voxel grid. Paired targets and validation volumes are averaged alike.
        sublattice: (z, y, x) strides; above 1, each patch is cut ``patch_size × sublattice`` large, made noisy
            at full resolution and split into its sub-lattices, which become the samples the network sees (told
            the level measured on the whole patch, as the denoiser does). Trains a sub-lattice twin: a network
            for scanner grain made nearly white by sub-lattice denoising, which learns what aliased anatomy
            looks like there. Not with self-supervised mode or noise.noisier2noise. (1, 1, 1): off.
    """

    patch_size: tuple[int, ...] = (48, 48, 48)
    batch_size: int = 4
    modality: str = "auto"
    modality_patterns: dict[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    foreground_threshold: float = 0.05
    foreground_probability: float = 0.9
    phantom_fraction: float = 0.0
    block_average: int = 1
    sublattice: tuple[int, ...] = (1, 1, 1)

    def __post_init__(self) -> None:
        set_field(self, "patch_size", check_ints("data.patch_size", self.patch_size, 3, 1))
        set_field(self, "batch_size", check_ints("data.batch_size", self.batch_size, 1)[0])
        set_field(self, "modality", check_choice("data.modality", self.modality, ("auto", *MODALITIES)))
        if not isinstance(self.modality_patterns, dict):
            raise ConfigError(f"data.modality_patterns must map globs to modalities, got {self.modality_patterns!r}")
        for glob, modality in self.modality_patterns.items():
            check_choice(f"data.modality_patterns[{glob!r}]", modality, MODALITIES)
        set_field(self, "include", tuple(str(e) for e in self.include))
        set_field(self, "exclude", tuple(str(e) for e in self.exclude))
        set_field(self, "foreground_threshold", check_number("data.foreground_threshold", self.foreground_threshold))
        probability = check_number("data.foreground_probability", self.foreground_probability, 0, 1)
        set_field(self, "foreground_probability", probability)
        set_field(self, "phantom_fraction", check_number("data.phantom_fraction", self.phantom_fraction, 0, 1))
        set_field(self, "block_average", check_ints("data.block_average", self.block_average, 1, 1)[0])
        set_field(self, "sublattice", check_ints("data.sublattice", self.sublattice, 3, 1))
        if max(self.sublattice) > 4:
            raise ConfigError(f"data.sublattice must be strides of 1-4, got {list(self.sublattice)}")


@dataclass(frozen=True)
class ValidationConfig:
    """The held-out volumes (split by volume, never by patch) and how often they are scored.

    Attributes:
        fraction: share of the volumes held out when ``volumes`` is empty (at least one when there are two
            or more volumes; none when there is only one).
        volumes: names (or globs) of the volumes to hold out; overrides ``fraction``.
        every: steps between validations (0: only at the end).
        crop: (z, y, x) of the centre crop scored in each volume (smaller for small volumes).
        sigmas: noise levels (normalised units) added to clean validation crops in synthetic and GAN modes.
    """

    fraction: float = 0.2
    volumes: tuple[str, ...] = ()
    every: int = 500
    crop: tuple[int, ...] = (64, 96, 96)
    sigmas: tuple[float, ...] = (0.02, 0.05, 0.1)

    def __post_init__(self) -> None:
        set_field(self, "fraction", check_number("validation.fraction", self.fraction, 0, 0.9))
        set_field(self, "volumes", tuple(str(v) for v in self.volumes))
        set_field(self, "every", check_ints("validation.every", self.every, 1, 0)[0])
        set_field(self, "crop", check_ints("validation.crop", self.crop, 3, 1))
        sigmas = self.sigmas if isinstance(self.sigmas, (list, tuple)) else [self.sigmas]
        set_field(self, "sigmas", tuple(check_number("validation.sigmas", s, 0, open_low=True) for s in sigmas))


@dataclass(frozen=True)
class NoiseConfig:
    """Synthetic noise (synthetic mode, and GAN mode with synthetic pairs).

    Attributes:
        sigma_range: noise SD in normalised units, drawn log-uniformly. A level below its minimum is clamped
            to it in the loss weights (every mode).
        kinds: modality → noise kinds to choose from (``MedicalDenoiseLib.noise.NOISE_KINDS``): white
            "gaussian" and "rician", the fast FBP-shaped "ct" and "speckle", and the acquisition physics
            "ct-projection", "mr-kspace" and "us-speckle" (docs/noise-physics.md).
        weight_floor: the loss weights are ``1 / (σ² + weight_floor²)``. Real "clean" volumes carry noise of
            their own (1–2 % of the range): without a floor the lowest levels, where that noise is all the
            network sees, would dominate the loss. 0 gives plain 1/σ².
        noisier2noise: correct for the noise the real volumes carry themselves (Noisier2Noise, Moran et al.
            2020): a target ``y = x + n`` made noisier by ``m`` predicts ``E[y | z]``, so the network's output
            ``g`` is trained through ``(α² g + z) / (1 + α²)`` with ``α = σ_m / σ_n``, which makes ``g``
            estimate the clean ``x`` when ``m`` and ``n`` are noise of one kind. ``σ_n`` is the volume's own
            blind noise estimate; phantom targets are exactly clean and train plainly.
        ranges: kind → parameter → range, replacing the library's training ranges of that kind
            (``NOISE_KINDS[kind].ranges``; ``sigma_range`` still sets every ``sigma``), e.g.
            ``{"mr-kspace": {"acquired": [[0.6, 1], [0.3, 1], [0.3, 1]]}}``. Spelled as
            :func:`~MedicalDenoiseLib.noise.parameter_ranges.range_from_spec` reads them. Training patches
            only: validation keeps the library's ranges, so runs stay comparable.
    """

    sigma_range: tuple[float, float] = (0.005, 0.15)
    kinds: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(_DEFAULT_KINDS))
    weight_floor: float = 0.02
    noisier2noise: bool = False
    ranges: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.noisier2noise, bool):
            raise ConfigError(f"noise.noisier2noise must be true or false, got {self.noisier2noise!r}")
        set_field(self, "sigma_range", check_span("noise.sigma_range", self.sigma_range, 0.0))
        set_field(self, "weight_floor", check_number("noise.weight_floor", self.weight_floor, 0))
        if not isinstance(self.kinds, dict):
            raise ConfigError(f"noise.kinds must map modalities to noise model lists, got {self.kinds!r}")
        kinds = dict(_DEFAULT_KINDS)
        for modality, names in self.kinds.items():
            check_choice("noise.kinds modality", modality, MODALITIES)
            names = tuple(names) if isinstance(names, (list, tuple)) else (names,)
            if not names:
                raise ConfigError(f"noise.kinds[{modality!r}] must list at least one noise model, got []")
            for name in names:
                check_choice(f"noise.kinds[{modality!r}]", name, tuple(NOISE_KINDS))
            kinds[modality] = names
        set_field(self, "kinds", kinds)
        self._check_ranges()

    def _check_ranges(self) -> None:
        if not isinstance(self.ranges, dict):
            raise ConfigError(f"noise.ranges must map noise kinds to parameter ranges, got {self.ranges!r}")
        for kind, parameters in self.ranges.items():
            check_choice("noise.ranges kind", kind, tuple(NOISE_KINDS))
            if not isinstance(parameters, dict):
                raise ConfigError(f"noise.ranges[{kind!r}] must map parameters to ranges, got {parameters!r}")
            try:
                NOISE_KINDS[kind].random(**self.kind_ranges(kind))
            except ValueError as error:
                raise ConfigError(f"noise.ranges[{kind!r}]: {error}") from None

    def kind_ranges(self, kind: str) -> dict[str, Any]:
        """The ranges of ``kind`` this config replaces, as range objects."""
        return {name: range_from_spec(spec) for name, spec in self.ranges.get(kind, {}).items()}


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of each training patch. Probabilities are per patch.

    Attributes:
        flips: random flips along each axis (and in-plane transposes of square patches).
        intensity_scale: [low, high] factor on the patch (all its channels alike); [1, 1] disables it.
        anisotropy: probability of thick-slice simulation (down-sample along z, resample back).
        anisotropy_factor: [low, high] down-sampling factor along z.
        bias_field, motion, ghosting: probabilities of these MRI artefacts (MR volumes only).
    """

    flips: bool = True
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    anisotropy: float = 0.1
    anisotropy_factor: tuple[float, float] = (1.5, 4.0)
    bias_field: float = 0.1
    motion: float = 0.05
    ghosting: float = 0.05

    def __post_init__(self) -> None:
        set_field(self, "flips", bool(self.flips))
        set_field(self, "intensity_scale", check_span("augment.intensity_scale", self.intensity_scale, 0.0))
        set_field(self, "anisotropy_factor", check_span("augment.anisotropy_factor", self.anisotropy_factor, 1.0, False))
        for key in ("anisotropy", "bias_field", "motion", "ghosting"):
            set_field(self, key, check_number(f"augment.{key}", getattr(self, key), 0, 1))


@dataclass(frozen=True)
class OptimConfig:
    """Adam with linear warm-up, then cosine decay to ``lr * min_lr_ratio`` at the last step.

    Attributes:
        lr: peak learning rate.
        warmup_steps: linear ramp from ~0 to ``lr``.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        weight_decay: AdamW decoupled weight decay.
        grad_clip: largest gradient norm (0: no clipping).
    """

    lr: float = 5e-4
    warmup_steps: int = 300
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        set_field(self, "lr", check_number("optim.lr", self.lr, 0, 1, open_low=True))
        set_field(self, "warmup_steps", check_ints("optim.warmup_steps", self.warmup_steps, 1, 0)[0])
        set_field(self, "min_lr_ratio", check_number("optim.min_lr_ratio", self.min_lr_ratio, 0, 1))
        set_field(self, "weight_decay", check_number("optim.weight_decay", self.weight_decay, 0))
        set_field(self, "grad_clip", check_number("optim.grad_clip", self.grad_clip, 0))


@dataclass(frozen=True)
class SelfSupervisedConfig:
    """Neighbor2Neighbor: ``|f(g1) - g2|² + gamma * |f(g1) - g2 - (g1(f(y)) - g2(f(y)))|²``, with ``gamma``
    ramped linearly from 0 at the first step to this value at ``max_steps``."""

    gamma: float = 2.0

    def __post_init__(self) -> None:
        set_field(self, "gamma", check_number("self_supervised.gamma", self.gamma, 0))


@dataclass(frozen=True)
class GANConfig:
    """Adversarial fine-tuning of a generator started from an autoencoder.

    Attributes:
        pairs: "synthetic" (clean volumes + library noise) or "paired" (``noisy/`` and ``clean/``).
        discriminator_features: channels of the 3D patch discriminator's levels.
        adversarial_loss: "lsgan" (least squares) or "nonsaturating" (logistic).
        lambda_l1: weight of the L1 term (per sample divided by the noise level, like the 1/σ² weights).
        lambda_adv: weight of the generator's adversarial term.
        lambda_feature: weight of discriminator feature matching (a perceptual term needing no download).
        discriminator_lr: the discriminator's peak learning rate (same warm-up and decay).
    """

    pairs: str = "synthetic"
    discriminator_features: tuple[int, ...] = (16, 32, 64)
    adversarial_loss: str = "lsgan"
    lambda_l1: float = 1.0
    lambda_adv: float = 0.01
    lambda_feature: float = 0.0
    discriminator_lr: float = 2e-4

    def __post_init__(self) -> None:
        set_field(self, "pairs", check_choice("gan.pairs", self.pairs, ("synthetic", "paired")))
        set_field(self, "discriminator_features", check_ints("gan.discriminator_features", self.discriminator_features))
        loss = check_choice("gan.adversarial_loss", self.adversarial_loss, ("lsgan", "nonsaturating"))
        set_field(self, "adversarial_loss", loss)
        for key in ("lambda_l1", "lambda_adv", "lambda_feature"):
            set_field(self, key, check_number(f"gan.{key}", getattr(self, key), 0))
        set_field(self, "discriminator_lr", check_number("gan.discriminator_lr", self.discriminator_lr, 0, 1, open_low=True))


@dataclass(frozen=True)
class RunConfig:
    """How the run executes.

    Attributes:
        device: "auto" (CUDA when present), "cpu" or "cuda".
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling).
        threads: CPU threads per process (0: the cores divided among the local processes).
        log_every: steps between CSV/TensorBoard rows.
        checkpoint_every: steps between checkpoints (one is also written at the end and on interruption).
        prefetch: batches prepared ahead in a background thread (-1: 2 on CUDA, 0 on the CPU).
    """

    device: str = "auto"
    amp: bool = True
    threads: int = 0
    log_every: int = 25
    checkpoint_every: int = 500
    prefetch: int = -1

    def __post_init__(self) -> None:
        set_field(self, "device", check_choice("run.device", self.device, ("auto", "cpu", "cuda")))
        set_field(self, "amp", bool(self.amp))
        set_field(self, "threads", check_ints("run.threads", self.threads, 1, 0)[0])
        set_field(self, "log_every", check_ints("run.log_every", self.log_every, 1, 1)[0])
        set_field(self, "checkpoint_every", check_ints("run.checkpoint_every", self.checkpoint_every, 1, 1)[0])
        set_field(self, "prefetch", check_ints("run.prefetch", self.prefetch, 1, -1)[0])


_SECTIONS = {
    "data": DataConfig, "validation": ValidationConfig, "noise": NoiseConfig, "augment": AugmentConfig,
    "optim": OptimConfig, "self_supervised": SelfSupervisedConfig, "gan": GANConfig, "run": RunConfig,
}


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Attributes:
        name: the exported model's name.
        description: the exported model's one-line summary ("" for one made from the mode and data).
        mode: one of ``MODES``.
        seed: seeds every random choice (patches, noise, augmentation, initial weights).
        max_steps: optimisation steps; the learning-rate schedule ends here.
        init: a shipped model name or model file to start from (None: random weights).
        blind: with ``init``, train without the noise-level input: the started-from network's first
            convolution keeps its image-channel weights and drops the level channel's. A blind network
            cannot be misled by a level estimate that does not match the noise, as happens with correlated
            noise.
        planar: train a planar network (2D, each slice on its own; patches one slice deep). With ``init``
            from a volumetric model, it starts as that model's planar twin
            (:func:`~MedicalDenoiseLib.models.networks.planar.planar_from_volumetric`).
        network: the network to train (with ``init``, the model file's network is used instead).
    """

    name: str = "my-denoiser"
    description: str = ""
    mode: str = "synthetic"
    seed: int = 0
    max_steps: int = 20000
    init: str | None = None
    blind: bool = False
    planar: bool = False
    network: NetworkConfig = field(default_factory=NetworkConfig)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    self_supervised: SelfSupervisedConfig = field(default_factory=SelfSupervisedConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        set_field(self, "mode", check_choice("mode", self.mode, MODES))
        set_field(self, "seed", check_ints("seed", self.seed, 1, 0)[0])
        set_field(self, "max_steps", check_ints("max_steps", self.max_steps, 1, 1)[0])
        for name in ("blind", "planar"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if max(self.data.sublattice) > 1 and (self.mode == "self-supervised" or self.noise.noisier2noise):
            raise ConfigError(f"data.sublattice {list(self.data.sublattice)} needs a clean target: not with mode "
                              f"self-supervised or noise.noisier2noise, got mode {self.mode!r}")
        if self.network.architecture == "patch_discriminator":
            raise ConfigError("network.architecture must be residual_autoencoder or gan_generator, got 'patch_discriminator' "
                              "(the discriminator is set under gan:)")

    def with_overrides(self, **changes: Any) -> "TrainConfig":
        """A copy with the given top-level fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _section(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {data!r}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; valid: {', '.join(names)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def config_from_dict(data: dict[str, Any] | None) -> TrainConfig:
    """A :class:`TrainConfig` from plain data (a parsed YAML file or a checkpoint's copy)."""
    data = dict(data or {})
    top = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(data) - set(top))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(str, unknown))}; valid: {', '.join(top)}")
    kwargs: dict[str, Any] = {name: _section(cls, data[name], name) for name, cls in _SECTIONS.items() if name in data}
    if "network" in data:
        if not isinstance(data["network"], dict):
            raise ConfigError(f"network must be a mapping of keys to values, got {data['network']!r}")
        try:
            kwargs["network"] = NetworkConfig.from_dict(data["network"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"network: {exc}") from None
    for name in ("name", "description", "mode", "seed", "max_steps", "init", "blind", "planar"):
        if name in data:
            kwargs[name] = data[name]
    return TrainConfig(**kwargs)


def _plain(value: Any) -> Any:
    if isinstance(value, NetworkConfig):
        return value.to_dict()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain JSON/YAML-ready data that :func:`config_from_dict` turns back into the same config."""
    return _plain(config)


def load_config(path: str | Path | None) -> TrainConfig:
    """Reads a YAML config file (None: the defaults).

    Raises:
        ConfigError: a missing or unparsable file, an unknown key or a value that breaks a rule.
    """
    if path is None:
        return TrainConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading a YAML config needs PyYAML: pip install 'medical-denoise[train]'") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"--config {path}: must hold a mapping of keys to values, got {type(data).__name__}")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
