"""The device mesh, its named axes, and multi-process start-up.

Training is data parallel over one mesh axis, BATCH, spanning every device of every process:
parameters and optimizer state are replicated, batch arrays are split along their first axis. Each
process reads its own slice of the global batch (`data.pipeline.Sampler` with its process index)
and `global_batch` assembles the slices into one global array without moving data
(`jax.make_array_from_process_local_data`). jit partitions the step over the mesh (GSPMD, Xu et
al. 2021) and inserts the gradient all-reduce.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH = "batch"
MEMBER = "member"


def data_mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes, axis BATCH."""
    return Mesh(np.asarray(jax.devices()), (BATCH,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_batch(global_batch: int, mesh: Mesh) -> None:
    if global_batch % mesh.size:
        raise ValueError(f"global batch {global_batch} (data.batch_size x {jax.process_count()} processes) "
                         f"is not divisible by the {mesh.size} devices of the mesh")


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
