"""Experiment configuration: frozen dataclasses, loaded from YAML, overridable from the CLI.

This module is the one place for defaults. A YAML file in `configs/` names only what it
changes (from the defaults, or from another file it `extends`); unknown keys are errors;
`load(path, overrides=["data.batch_size=16"])` applies
single-key overrides (values parsed as YAML scalars or lists).
"""

from __future__ import annotations

import dataclasses
import datetime
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import yaml

from weatherens.errors import InputError


LEVEL_WEIGHTINGS = ("pressure", "uniform")  # train.level_weighting
PERTURBATIONS = ("none", "gaussian", "bred")  # initial-condition perturbations of the ML ensemble
BASELINES = ("persistence", "climatology", "physics_analogue", "physics_limit")  # demo.baselines


class ConfigError(InputError):
    """A configuration file or override that does not fit the schema or a value out of its range."""


def _check(section: str, cfg: Any, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Raise ConfigError listing every field of `cfg` whose value breaks its rule (checked when loaded)."""
    problems = [f"{section}.{name} = {getattr(cfg, name)!r}: {what}"
                for name, (ok, what) in rules.items() if not ok(getattr(cfg, name))]
    if problems:
        raise ConfigError("; ".join(problems))


def _at_least(n):
    return (lambda v: v >= n), f"must be >= {n}"


def _positive():
    return (lambda v: v > 0), "must be > 0"


def _one_of(*options):
    return (lambda v: v in options), f"must be one of {list(options)}"


def _all_in(*options):
    return (lambda v: set(v) <= set(options)), f"must be a subset of {list(options)}"


@dataclasses.dataclass(frozen=True)
class TimeRange:
    """An inclusive range of times, ISO 8601 strings (e.g. '2000-01-01', '2000-03-31T18')."""

    start: str
    end: str

    def as_slice(self) -> slice:
        return slice(self.start, self.end)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What the model sees and how the training sampler serves it."""

    store: str = ""  # local path or fsspec URL of an ERA5-schema zarr; '' means "given on the CLI"
    variables: tuple[str, ...] = (
        "geopotential",
        "temperature",
        "u_component_of_wind",
        "v_component_of_wind",
        "surface_pressure",
        "2m_temperature",
    )
    levels: tuple[int, ...] = (250, 500, 700, 850)  # hPa, for the variables that have levels
    static: tuple[str, ...] = ()  # time-invariant fields of the store, e.g. land_sea_mask, geopotential_at_surface
    timestep_hours: int = 6
    rollout_steps: int = 1  # k: targets at t+dt ... t+k dt
    batch_size: int = 8  # per process
    seed: int = 0
    forcings: tuple[str, ...] = ()  # subset of weatherens.data.forcings.FORCINGS
    in_memory_max_gib: float = 4.0  # read the split into RAM when it is at most this large
    prefetch: int = 4  # batches prepared ahead by the background thread
    train: TimeRange = TimeRange("2000-01-01", "2000-04-30T18")
    validation: TimeRange = TimeRange("2000-05-01", "2000-05-31T18")
    test: TimeRange = TimeRange("2000-06-01", "2000-06-30T18")

    def __post_init__(self):
        _check("data", self, {"timestep_hours": _at_least(1), "rollout_steps": _at_least(1),
                              "batch_size": _at_least(1), "in_memory_max_gib": _at_least(0), "prefetch": _at_least(0)})


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """The physics world: a Held-Suarez dinosaur run archived in ERA5 schema.

    The defaults are the demo's world: half a year after a 150-day spin-up (130 days at T21, then
    20 at T42), T42 truth with 12 sigma layers and a 30-minute step, archived on the 64 x 32 grid
    at 4 pressure levels (see the README for the build time).
    """

    years: float = 0.5
    seed: int = 0
    resolution: str = "T42"  # spectral truncation of the truth run (T21, T31, T42, T63, ...)
    layers: int = 12  # sigma layers of the truth run
    timestep_minutes: float = 30.0  # dynamical time step of the truth run (stable at T42 to 30 min)
    spinup_days: float = 150.0
    # The spin-up runs at this (cheaper) truncation, is interpolated spectrally to `resolution` and ends
    # with `spinup_final_days` there; the truth's own resolution (or '') spins up at the truth's only.
    spinup_resolution: str = "T21"
    spinup_final_days: float = 20.0
    start: str = "2000-01-01"  # calendar date given to the first archived time
    archive_hours: int = 6
    levels: tuple[int, ...] = (250, 500, 700, 850)  # hPa, archived pressure levels
    nlon: int = 64  # archived grid (WeatherBench 2 64 x 32 equiangular, no poles)
    nlat: int = 32
    state_every_days: float = 5.0  # save the full model state this often, for physics ensembles


# `SphericalHarmonicTransform(zonal_matmul=...)` for each `ModelConfig.zonal_transform`
ZONAL_MATMUL = {"auto": None, "matmul": True, "fft": False}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The stochastic spherical forecaster (`weatherens.model`); the defaults are `configs/small.yaml`'s."""

    embed_dim: int = 64  # channels inside the network
    blocks: int = 4  # spectral-convolution blocks
    mlp_ratio: float = 2.0  # hidden width of the pointwise MLPs, as a multiple of embed_dim
    lmax: int = 0  # largest spherical-harmonic degree of the spectral convolutions; 0: the grid's
    noise_dim: int = 16  # latent noise vector per member and step, fed to the conditional layer norms
    noise_shift: bool = True  # the conditional norms shift by z B (global constants) as well as scale; False: scale only
    # dtype of the network's matmul operands: float32 (Precision.HIGHEST), or bfloat16 with float32
    # parameters, sums, norms, zonal transforms (FFT or matmul), state and loss (mixed precision for GPUs)
    compute_dtype: str = "float32"
    # rematerialise each block in the backward pass (jax.checkpoint): a gradient keeps the activations of
    # one block at a time, not of all blocks, for one more forward pass of the blocks; the same function
    remat_blocks: bool = False
    # the spherical transforms' zonal Fourier transform: "matmul" (cos/sin tables), "fft", or "auto": on CPUs a
    # matmul up to sht.ZONAL_MATMUL_MAX_NLON longitudes, where its gradient is faster there (docs/benchmarks.md),
    # else the FFT; the same function either way
    zonal_transform: str = "auto"
    noise_fields: int = 0  # spatially correlated noise channels on the sphere (AR(1) in spectral space); 0: off
    noise_field_degree: float = 8.0  # e-folding total wavenumber of the noise fields' spectrum
    noise_field_rho: float = 0.5  # AR(1) correlation of the noise fields from one step to the next
    # Band limit of the increment (`model.increment`): degrees above increment_lmax are removed and the
    # increment_taper degrees below it ramp down (cos^2); 0: the decoder's pointwise output as it is
    increment_lmax: int = 0
    increment_taper: int = 0
    # channels whose area-weighted global mean each step keeps (e.g. [surface_pressure]: dry mass)
    conserve_global_mean: tuple[str, ...] = ()

    def __post_init__(self):
        _check("model", self, {"embed_dim": _at_least(1), "blocks": _at_least(1), "mlp_ratio": _positive(),
                               "lmax": _at_least(0), "noise_dim": _at_least(0), "noise_fields": _at_least(0),
                               "noise_field_degree": _positive(),
                               "noise_field_rho": ((lambda v: 0 <= v < 1), "must be in [0, 1)"),
                               "increment_lmax": _at_least(0),
                               "compute_dtype": ((lambda v: v in ("float32", "bfloat16")), "must be float32 or bfloat16"),
                               "zonal_transform": ((lambda v: v in ZONAL_MATMUL), f"must be one of {tuple(ZONAL_MATMUL)}"),
                               "increment_taper": ((lambda v: 0 <= v and (v < self.increment_lmax or v == 0)),
                                                   "must be >= 0 and below increment_lmax")})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Fair-CRPS training (`weatherens.train`)."""

    steps: int = 2000  # optimizer steps in all
    members: int = 4  # ensemble members per sample (M >= 2)
    alpha: float = 0.95  # almost-fair CRPS: 1 fair, 0 standard (AIFS-CRPS default 0.95)
    learning_rate: float = 1e-3  # peak, after the linear warm-up
    warmup_steps: int = 100
    end_learning_rate: float = 1e-5  # at the end of the cosine decay
    weight_decay: float = 0.01  # AdamW
    grad_clip: float = 1.0  # global gradient norm
    level_weighting: str = "pressure"  # LEVEL_WEIGHTINGS: "pressure" (proportional to the level) or "uniform"
    variable_weights: dict = dataclasses.field(default_factory=dict)  # long name -> loss weight (default 1)
    rollout_lengths: tuple[int, ...] = (1,)  # autoregressive steps in the loss, per phase
    rollout_starts: tuple[int, ...] = (0,)  # first optimizer step of each phase
    # Per-phase learning-rate schedules: phase i warms up over phase_warmup_steps[i] to
    # phase_learning_rates[i] and decays (cosine) to end_learning_rate by the next phase's start.
    # Empty: one warm-up + cosine schedule over all steps (learning_rate, warmup_steps).
    phase_learning_rates: tuple[float, ...] = ()
    phase_warmup_steps: tuple[int, ...] = ()
    # Gradient only through the last gradient_steps rollout steps (the earlier ones are a push-forward
    # without gradient, Brandstetter et al. 2022); 0: through every step
    gradient_steps: int = 0
    ema_decay: float = 0.0  # exponential moving average of the weights (inference and selection use it); 0: off
    # Start a run whose workdir holds no checkpoint from another checkpoint's inference weights (a
    # training workdir, or the name of a shipped one in checkpoints/): at that checkpoint's step, with
    # its normalisation statistics and a fresh optimizer state, so that phases added after its step
    # extend its recipe. The model config and channels must be the checkpoint's. "": from scratch
    init_from: str = ""
    remat: bool = True  # rematerialise each rollout step in the backward pass (memory ~ one step)
    # devices that share one sample by splitting its members, and its latitudes into bands (the mesh
    # is batch x member_shards x lat_shards): 1 and 1 is data parallel only; more lets a sample too
    # large for one device train (e.g. 0.25 deg)
    member_shards: int = 1
    lat_shards: int = 1
    seed: int = 0  # parameters and noise; the data order has data.seed
    log_every: int = 10
    validate_every: int = 200
    validation_batches: int = 4
    # Long-lead validation (`train.validation`) at every validate_every: an ensemble of validation_members
    # from validation_inits init times spread over the validation split, scored at validation_lead_hours;
    # the checkpoint with the lowest mean CRPS / climatology's is kept in WORKDIR/best. 0 inits: off
    validation_inits: int = 0
    validation_members: int = 8
    validation_lead_hours: tuple[int, ...] = (24, 120, 240)
    checkpoint_every: int = 200
    keep_checkpoints: int = 2

    def __post_init__(self):
        _check("train", self, {
            "steps": _at_least(1), "members": ((lambda v: v >= 2), "the (almost-)fair CRPS needs at least 2 members"),
            "alpha": ((lambda v: 0 <= v <= 1), "must be in [0, 1]"), "learning_rate": _positive(),
            "warmup_steps": _at_least(0), "end_learning_rate": _at_least(0), "weight_decay": _at_least(0),
            "grad_clip": _positive(), "level_weighting": _one_of(*LEVEL_WEIGHTINGS),
            "variable_weights": ((lambda v: all(x >= 0 for x in v.values())), "weights must be >= 0"),
            "rollout_lengths": ((lambda v: len(v) > 0 and min(v) >= 1), "need one or more lengths, each >= 1"),
            "rollout_starts": ((lambda v: len(v) == len(self.rollout_lengths) and v[0] == 0 and list(v) == sorted(set(v))),
                               "one per rollout length, strictly ascending from 0"),
            "log_every": _at_least(1), "validate_every": ((lambda v: v >= 0), "must be >= 0 (0: no validation)"),
            "validation_batches": _at_least(1),
            "phase_learning_rates": ((lambda v: len(v) in (0, len(self.rollout_lengths)) and all(x > 0 for x in v)),
                                     "empty or one peak (> 0) per rollout phase"),
            "phase_warmup_steps": ((lambda v: len(v) == (len(self.rollout_lengths) if self.phase_learning_rates else 0)
                                    and all(x >= 0 for x in v)),
                                   "one warm-up (>= 0) per phase when phase_learning_rates is set, else empty"),
            "gradient_steps": _at_least(0),
            "member_shards": ((lambda v: v >= 1 and self.members % v == 0), "must be >= 1 and divide train.members"),
            "lat_shards": _at_least(1),
            "ema_decay": ((lambda v: 0 <= v < 1), "must be in [0, 1)"),
            "validation_inits": _at_least(0), "validation_members": ((lambda v: v >= 2), "must be >= 2"),
            "validation_lead_hours": ((lambda v: len(v) > 0 and min(v) > 0), "one or more leads > 0"),
            "checkpoint_every": _at_least(1), "keep_checkpoints": _at_least(1)})


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """`weatherens demo`: the hindcast and baselines scored at the end of the main job."""

    members: int = 20  # ML ensemble size (and the climatological ensemble's)
    lead_hours: int = 240
    max_inits: int = 8  # initialisation times: every init_every_hours from the test split's start
    init_every_hours: int = 60  # nearby inits are correlated; the scorecard's intervals account for it
    # The physics ensembles cost seconds per member-day (the 20-minute budget of the demo): fewer members;
    # the fair CRPS and the debiased SSR do not depend on the ensemble size in expectation.
    analogue_members: int = 4  # the operational analogue: cheaper model from the analysis of the archive
    # T31 resolves every degree of the 64 x 32 archive (T21 left the truth's degrees 22-31 without spread);
    # its 60-min step (twice the world's) makes it as cheap as T21 at 30 min (docs/yardsticks.md)
    analogue_resolution: str = "T31"
    analogue_timestep_minutes: float = 60.0
    # x the analogue's own analysis errors (1: their measured size) and x its own 6-h model errors added every
    # interval (world/model_error.py; 0: none), tuned on 6 validation inits for a debiased SSR near 1 at days 1-10
    # (scripts/tune_physics_ensembles.py; docs/yardsticks.md); the limit needs neither (its SSR is 1.0-1.2 at 1)
    analogue_scale: float = 1.0
    analogue_model_error_scale: float = 2.0
    limit_members: int = 2  # the predictability limit: the world's own model (T42), same analysis and perturbations
    limit_scale: float = 1.0
    perturbation: str = "none"  # initial-condition perturbation of the ML ensemble (PERTURBATIONS)
    checkpoint: str = "small"  # shipped checkpoint (checkpoints/<name>) used unless --retrain
    # run and scored beside the ML ensemble (a subset of these four; the physics ones cost the most)
    baselines: tuple[str, ...] = BASELINES

    def __post_init__(self):
        _check("demo", self, {
            "members": _at_least(1), "lead_hours": _positive(), "max_inits": _at_least(1),
            "init_every_hours": _positive(), "analogue_members": _at_least(1), "analogue_timestep_minutes": _positive(),
            "analogue_scale": _at_least(0), "analogue_model_error_scale": _at_least(0), "limit_members": _at_least(1),
            "limit_scale": _at_least(0), "perturbation": _one_of(*PERTURBATIONS), "baselines": _all_in(*BASELINES)})


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str = "default"
    data: DataConfig = DataConfig()
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    demo: DemoConfig = DemoConfig()


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        cls = cast(type, hint)  # a dataclass hint is a class
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(cls, value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            value = [value]
        (item_hint, _ellipsis) = typing.get_args(hint)
        return tuple(_coerce(v, item_hint, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        problems = []
        for option in (a for a in typing.get_args(hint) if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                problems.append(str(err))
        raise ConfigError(f"{where}: {value!r} fits none of {hint} ({'; '.join(problems)})")
    if hint is dict:
        if not isinstance(value, dict) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in value.values()):
            raise ConfigError(f"{where}: expected a mapping of names to numbers, got {value!r}")
        return {str(k): float(x) for k, x in value.items()}
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, datetime.date):  # YAML reads 2000-02-01 as a date
        return value.isoformat()
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def _build(cls: type, mapping: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in mapping.items():
        default = fields[k].default
        if isinstance(v, dict) and dataclasses.is_dataclass(default):  # a partial section: over its defaults
            v = {**to_dict(default), **v}
        kwargs[k] = _coerce(v, hints[k], f"{where}.{k}" if where else k)
    return cls(**kwargs)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, section by section (a mapping in both is merged, anything else replaced)."""
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def _read_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML file's mapping; `extends: other.yaml` (relative to the file) puts it on top of that file's."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' makes a cycle through {[str(p) for p in seen]}")
    tree = yaml.safe_load(path.read_text()) or {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    parent = tree.pop("extends", None)
    if parent is None:
        return tree
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {parent!r}")
    parent_path = path.parent / parent
    if not parent_path.exists():
        raise ConfigError(f"{path}: 'extends: {parent}' names a file that does not exist ({parent_path})")
    return _merge(_read_tree(parent_path, seen + (path.resolve(),)), tree)


def load(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Experiment:
    """Read an experiment from YAML (or the defaults when path is None) and apply overrides.

    Each override is 'section.key=value' with value parsed as YAML, e.g. 'data.levels=[500,850]'.
    A file may start from another with `extends: other.yaml` (a path relative to it) and name only
    what it changes; sections merge key by key.
    """
    tree = _read_tree(Path(path)) if path is not None else {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return _build(Experiment, tree, str(path) if path else "")


def from_dict(tree: dict, where: str = "<config>") -> Experiment:
    """An experiment from a plain dict as `to_dict` writes it (e.g. the one saved in a checkpoint)."""
    return _build(Experiment, tree, where)


def to_dict(exp: Any) -> dict:
    """A plain, YAML-serialisable dict of a config (tuples become lists, ints in float fields floats)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            hints = typing.get_type_hints(type(v))
            return {f.name: plain(_coerce(getattr(v, f.name), hints[f.name], f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v

    return plain(exp)
