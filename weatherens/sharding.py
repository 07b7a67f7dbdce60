"""The device mesh, its named axes, and multi-process start-up.

Training runs on a (BATCH, MEMBER) mesh over every device of every process: parameters and
optimizer state are replicated, batch arrays are split along their first axis over BATCH (and
replicated over MEMBER), and with `train.member_shards` = m > 1 the m devices of a BATCH row each
run 1/m of every sample's members (`member_constraint`), so that a sample too large for one device
trains on m (the ensemble's members are independent up to the loss, whose pairwise term gathers
them). Each process reads its own slice of the global batch (`data.pipeline.Sampler` with its
process index) and `global_batch` assembles the slices into one global array without moving data
(`jax.make_array_from_process_local_data`). jit partitions the step over the mesh (GSPMD, Xu et
al. 2021) and inserts the gathers and the gradient all-reduce.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH = "batch"
MEMBER = "member"


def data_mesh(member_shards: int = 1) -> Mesh:
    """A (BATCH, MEMBER) mesh over all devices of all processes, MEMBER of size member_shards
    (consecutive devices, so a sample's shards share a process and its fast links)."""
    devices = np.asarray(jax.devices())
    if devices.size % member_shards:
        raise ValueError(f"train.member_shards = {member_shards} does not divide the {devices.size} devices")
    return Mesh(devices.reshape(-1, member_shards), (BATCH, MEMBER))


def member_constraint(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """x (M, ...) split over the MEMBER axis of `mesh` inside a jitted function (no-op without one, or
    for a MEMBER axis of size 1); under `jax.vmap(..., spmd_axis_name=BATCH)` the mapped axis goes on BATCH."""
    if mesh is None or mesh.shape[MEMBER] == 1:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(MEMBER)))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch(global_batch: int, mesh: Mesh) -> None:
    rows = mesh.shape[BATCH]
    if global_batch % rows:
        raise ValueError(f"global batch {global_batch} (data.batch_size x {jax.process_count()} processes) "
                         f"is not divisible by the mesh's {rows} batch rows ({mesh.size} devices / "
                         f"train.member_shards {mesh.shape[MEMBER]})")


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
