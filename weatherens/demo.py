"""`weatherens demo`: the main job on the embedded default.

Today: build (or reuse from the cache) the physics world, print its summary, and show that the
data layer serves it as training data (splits, channels, normalization statistics).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from weatherens import config
from weatherens.data import era5, stats, world_store
from weatherens.data.pipeline import Sampler

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def experiment(quick: bool) -> config.Experiment:
    """The demo's experiment: the defaults, or configs/quick.yaml for a tiny world."""
    if not quick:
        return config.load(None)
    path = CONFIGS / "quick.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the quick demo's config is missing (run from a weatherens checkout)")
    return config.load(path)


def world_path(cache: Path, cfg: config.WorldConfig) -> Path:
    """Cache location of a world, keyed by its full configuration."""
    key = hashlib.sha256(json.dumps(config.to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    return Path(cache) / f"world-{cfg.resolution}-{key}.zarr"


def _stats_table(table, channels: tuple[str, ...]) -> str:
    lines = [f"{'channel':<30}{'mean':>14}{'std':>12}{'6h-diff std':>14}  units"]
    for name in channels:
        var, _, level = name.partition("@")
        da = table[var]
        if level:
            da = da.sel(level=int(level))
        mean, std, res = (float(da.sel(statistic=s)) for s in ("mean", "std", "residual_std"))
        lines.append(f"{name:<30}{mean:>14.6g}{std:>12.4g}{res:>14.4g}  {da.attrs.get('units', '')}")
    return "\n".join(lines)


def run(cache: Path, quick: bool = False, progress: bool = True) -> int:
    exp = experiment(quick)
    path = world_path(cache, exp.world)
    world_store.build_world(path, exp.world, progress=progress)
    print(world_store.describe(path))

    data_cfg = exp.data
    print(f"\nTraining data ({data_cfg.timestep_hours} h step, rollout {data_cfg.rollout_steps}, batch {data_cfg.batch_size}):")
    samplers = {}
    for split in ("train", "validation", "test"):
        s = Sampler.from_config(data_cfg, split, store=str(path))
        samplers[split] = s
        r = getattr(data_cfg, split)
        print(f"  {split:<11}{r.start} .. {r.end}: {len(s.anchors):>6} samples, {len(s):>5} batches/epoch"
              f"{' (in RAM)' if s.source.in_memory else ' (from zarr)'}")
    train = samplers["train"]
    print(f"  {len(train.channels)} channels: {', '.join(train.channels)}")
    batch = train.batch(0)
    print(f"  a batch: inputs {batch.inputs.shape}, targets {batch.targets.shape}, forcings {batch.forcings.shape}")

    train_ds = era5.open(path, data_cfg.variables, data_cfg.levels, data_cfg.train.as_slice())
    table = stats.load_or_compute(train_ds, path.with_name(path.stem + "-normalization.nc"), data_cfg.timestep_hours)
    print("\nNormalization statistics of the training split (area-weighted):")
    print(_stats_table(table, train.channels))
    return 0
