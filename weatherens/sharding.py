"""The device mesh, its named axes, and multi-process start-up.

Training runs on a (BATCH, MEMBER, LAT) mesh over every device of every process: parameters and
optimizer state are replicated, batch arrays are split along their first axis over BATCH (and
replicated over MEMBER and LAT). With `train.member_shards` = m > 1 the devices of a BATCH row
each run 1/m of every sample's members (the ensemble's members are independent up to the loss,
whose pairwise term gathers them); with `train.lat_shards` = b > 1 each runs a band of 1/b of the
latitudes (the spatial model parallelism of FourCastNet 3, Bonev et al. 2025: pointwise layers and
the longitude FFTs stay within a band, the Legendre analysis sums over bands and the synthesis
returns each band its rows). `member_constraint` places a step's member arrays so; a sample too
large for one device then trains on m x b. Each process reads its own slice of the global batch
(`data.pipeline.Sampler` with its process index) and `global_batch` assembles the slices into one
global array without moving data
(`jax.make_array_from_process_local_data`). jit partitions the step over the mesh (GSPMD, Xu et
al. 2021) and inserts the gathers and the gradient all-reduce.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from weatherens.errors import InputError

BATCH = "batch"
MEMBER = "member"
LAT = "lat"


def data_mesh(member_shards: int = 1, lat_shards: int = 1) -> Mesh:
    """A (BATCH, MEMBER, LAT) mesh over all devices of all processes, MEMBER of size member_shards and
    LAT of size lat_shards (consecutive devices, so a sample's shards share a process and its fast links)."""
    devices = np.asarray(jax.devices())
    if devices.size % (member_shards * lat_shards):
        raise InputError(f"train.member_shards x train.lat_shards = {member_shards} x {lat_shards} does not "
                         f"divide the {devices.size} devices")
    return Mesh(devices.reshape(-1, member_shards, lat_shards), (BATCH, MEMBER, LAT))


def member_constraint(x: jax.Array, mesh: Mesh | None, on_grid: bool = False) -> jax.Array:
    """x (M, ...) split over the MEMBER axis of `mesh` inside a jitted function, and with `on_grid`
    (x: (M, ..., lat, lon)) its latitudes over the LAT axis, which must divide them (`check_lat_shards`);
    a no-op unless the mesh `splits_samples`. Under `jax.vmap(..., spmd_axis_name=BATCH)` the mapped
    axis goes on BATCH."""
    if not splits_samples(mesh):
        return x
    assert mesh is not None
    spec = (MEMBER,) + ((None,) * (x.ndim - 3) + (LAT, None) if on_grid else ())
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))


def splits_samples(mesh: Mesh | None) -> bool:
    """Whether `mesh` spreads one sample over several devices (members or latitude bands)."""
    return mesh is not None and mesh.shape[MEMBER] * mesh.shape[LAT] > 1


def check_lat_shards(nlat: int, lat_shards: int) -> None:
    """Latitude bands must be equal: XLA's partitioner pads uneven shards but aborts the process on
    an FFT or a sort of padded bands (jax 0.10), so lat_shards must divide the grid's latitudes
    (121 at 1.5 deg: 11; 721 at 0.25 deg: 7 or 103; 720 without the poles: any divisor)."""
    if nlat % lat_shards:
        divisors = [d for d in range(2, min(nlat, 64) + 1) if nlat % d == 0]
        raise InputError(f"train.lat_shards = {lat_shards} does not divide the grid's {nlat} latitudes "
                         f"(divisors up to 64: {divisors or 'none'})")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch(global_batch: int, mesh: Mesh) -> None:
    rows = mesh.shape[BATCH]
    if global_batch % rows:
        raise InputError(f"global batch {global_batch} (data.batch_size x {jax.process_count()} processes) "
                         f"is not divisible by the mesh's {rows} batch rows ({mesh.size} devices / "
                         f"train.member_shards {mesh.shape[MEMBER]} / train.lat_shards {mesh.shape[LAT]})")


def global_batch(local: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's slice of each batch array -> the global array sharded along axis 0."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def initialize(coordinator: str | None, num_processes: int, process_id: int) -> None:
    """Start jax.distributed when several processes train together (no-op for one).

    On CPU the collectives go through gloo; on GPU and TPU JAX picks NCCL / ICI itself. With
    coordinator None, jax.distributed reads the cluster from the environment (SLURM, Open MPI, TPU pods).
    """
    if num_processes <= 1 and coordinator is None:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU only; must precede any backend use
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
