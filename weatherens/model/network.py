"""The stochastic spherical forecaster network (flax.nnx), SFNO-style with noise-conditioned norms.

    features (..., C_in, lat, lon) --encoder MLP--> h (..., lat, lon, E)   (channels last inside)
    repeat `blocks` times:
        h = h + GELU(SpectralConv(CLN(h, z)) + Linear(CLN(h, z)))        (SFNO block, Bonev et al. 2023)
        h = h + MLP(CLN(h, z))
    h --decoder MLP (zero-initialised output)--> (..., C_out, lat, lon)

z (..., D) is the member's latent noise for this step; the conditional layer norms (CLN) start
deaf to it (zero-initialised), as AIFS-CRPS and FGN do, and training with a fair CRPS teaches the
network to use it for spread. The decoder's output layer starts at zero, so an untrained model
predicts a zero residual (persistence). With `model.remat_blocks` each block is rematerialised in
the backward pass (`jax.checkpoint` in a scan over the blocks, Chen et al. 2016, "Training deep nets
with sublinear memory cost"; scanned layers as in MaxText): a gradient keeps each block's input and
recomputes its insides, so the activations held at once are one block's instead of all `blocks`'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from weatherens.config import ModelConfig
from weatherens.model.layers import (COMPUTE_DTYPES, ChannelLinear, ConditionalLayerNorm, PointwiseMLP,
                                     SpectralConvolution, TransformSlot)
from weatherens.sphere.sht import SphericalHarmonicTransform


class SphericalBlock(nnx.Module):
    def __init__(self, width: int, hidden: int, noise_dim: int, sht: SphericalHarmonicTransform | TransformSlot, *,
                 rngs: nnx.Rngs, noise_shift: bool = True, compute_dtype=jnp.float32):
        self.norm_spectral = ConditionalLayerNorm(width, noise_dim, rngs=rngs, shift=noise_shift)
        self.spectral = SpectralConvolution(width, sht, rngs=rngs, compute_dtype=compute_dtype)
        self.skip = ChannelLinear(width, width, rngs=rngs, compute_dtype=compute_dtype)
        self.norm_mlp = ConditionalLayerNorm(width, noise_dim, rngs=rngs, shift=noise_shift)
        self.mlp = PointwiseMLP(width, hidden, width, rngs=rngs, compute_dtype=compute_dtype)

    def __call__(self, h: jax.Array, z: jax.Array) -> jax.Array:
        y = self.norm_spectral(h, z)
        h = h + jax.nn.gelu(self.spectral(y) + self.skip(y))
        return h + self.mlp(self.norm_mlp(h, z))


class SphericalForecaster(nnx.Module):
    """features (..., in_channels, lat, lon), z (..., noise_dim) -> (..., out_channels, lat, lon)."""

    def __init__(self, in_channels: int, out_channels: int, cfg: ModelConfig,
                 sht: SphericalHarmonicTransform | TransformSlot, *, rngs: nnx.Rngs):
        width, hidden = cfg.embed_dim, max(1, int(round(cfg.mlp_ratio * cfg.embed_dim)))
        cd = COMPUTE_DTYPES[cfg.compute_dtype]
        self.encoder = PointwiseMLP(in_channels, hidden, width, rngs=rngs, compute_dtype=cd)
        self.blocks = nnx.List([SphericalBlock(width, hidden, cfg.noise_dim, sht, rngs=rngs, noise_shift=cfg.noise_shift,
                                               compute_dtype=cd) for _ in range(cfg.blocks)])
        self.decoder = PointwiseMLP(width, hidden, out_channels, rngs=rngs, zero_out=True, compute_dtype=cd)
        self.remat_blocks = cfg.remat_blocks

    def __call__(self, features: jax.Array, z: jax.Array) -> jax.Array:
        h = self.encoder(jnp.moveaxis(features, -3, -1))  # the blocks work channels-last (`layers`)
        if self.remat_blocks:
            h = rematerialised(self.blocks, h, z)
        else:
            for block in self.blocks:
                h = block(h, z)
        return jnp.moveaxis(self.decoder(h), -1, -3)


def rematerialised(blocks: nnx.List, h: jax.Array, z: jax.Array) -> jax.Array:
    """The blocks applied in turn to h, each rematerialised in the backward pass: a `lax.scan` over
    their stacked parameters whose body is `jax.checkpoint`ed, so a gradient keeps each block's
    input and recomputes one block's insides at a time (in straight-line code XLA's CPU scheduler
    hoisted the recomputations and held every block's activations anyway). The stack is a copy of
    the blocks' parameters per call."""
    graphdef = nnx.graphdef(blocks[0])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(nnx.state(b) for b in blocks))

    def body(h, state):
        return nnx.merge(graphdef, state)(h, z), None

    return jax.lax.scan(jax.checkpoint(body), h, stacked)[0]
