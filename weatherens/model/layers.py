"""Building blocks of the spherical forecaster (flax.nnx), on arrays (..., channel, lat, lon).

- `ChannelLinear`: a 1 x 1 convolution, the same linear map of the channels at every grid point.
- `PointwiseMLP`: two of them with a GELU between.
- `ConditionalLayerNorm`: layer norm over channels whose scale and shift are linear in a noise
  vector, zero-initialised so that an untrained network ignores the noise (AIFS-CRPS, Lang et
  al. 2024, arXiv:2412.15832; FGN, Alet et al. 2025, arXiv:2506.10772).
- `SpectralConvolution`: the spherical convolution of SFNO (Bonev et al. 2023, "Spherical Fourier
  Neural Operators", ICML, arXiv:2306.03838): transform to spherical harmonics, mix channels with
  weights that depend on the degree l only (so the operator commutes with rotations about the
  axis and is a convolution on the sphere, Driscoll & Healy 1994), transform back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from weatherens.sphere.sht import SphericalHarmonicTransform

_HIGHEST = jax.lax.Precision.HIGHEST


class ChannelLinear(nnx.Module):
    """y[..., o, lat, lon] = sum_i x[..., i, lat, lon] W[i, o] + b[o]; LeCun-normal W (or zeros)."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, zero: bool = False):
        init = nnx.initializers.zeros if zero else nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...ihw,io->...ohw", x, self.kernel[...], precision=_HIGHEST)
        return y + self.bias[...][:, None, None]


class PointwiseMLP(nnx.Module):
    """cin -> hidden -> cout at every grid point, GELU in between; `zero_out` zero-initialises the output layer."""

    def __init__(self, cin: int, hidden: int, cout: int, *, rngs: nnx.Rngs, zero_out: bool = False):
        self.inner = ChannelLinear(cin, hidden, rngs=rngs)
        self.outer = ChannelLinear(hidden, cout, rngs=rngs, zero=zero_out)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.outer(jax.nn.gelu(self.inner(x)))


class ConditionalLayerNorm(nnx.Module):
    """LN over the channel axis (-3), then scale (1 + z A) and shift (z B) from the noise vector z.

    x: (..., C, lat, lon); z: (..., D) with the same leading dims. A and B (D, C) start at zero.
    """

    def __init__(self, channels: int, noise_dim: int, *, rngs: nnx.Rngs, eps: float = 1e-6):
        self.eps = eps
        self.scale = nnx.Param(jnp.zeros((noise_dim, channels), jnp.float32))
        self.shift = nnx.Param(jnp.zeros((noise_dim, channels), jnp.float32))

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        mean = x.mean(axis=-3, keepdims=True)
        var = jnp.square(x - mean).mean(axis=-3, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        gamma = 1.0 + jnp.einsum("...d,dc->...c", z, self.scale[...], precision=_HIGHEST)
        beta = jnp.einsum("...d,dc->...c", z, self.shift[...], precision=_HIGHEST)
        return y * gamma[..., None, None] + beta[..., None, None]


class _Static:
    """Holds a transform as a static (non-pytree) attribute: its tables are constants, not parameters."""

    def __init__(self, value):
        self.transform = value


class SpectralConvolution(nnx.Module):
    """y_lm[o] = sum_i W_l[i, o] x_lm[i] in spherical-harmonic space (SFNO's "driscoll-healy" mixing).

    Complex weights W (C_in, C_out, L + 1), initialised with variance 1 / C_in; the transform is
    the grid's `SphericalHarmonicTransform` truncated at its lmax (so degrees above it are dropped).
    """

    def __init__(self, channels: int, sht: SphericalHarmonicTransform, *, rngs: nnx.Rngs):
        self._sht = _Static(sht)
        shape = (2, channels, channels, sht.lmax + 1)
        self.weight = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) * (0.5 / channels) ** 0.5)

    def __call__(self, x: jax.Array) -> jax.Array:
        sht = self._sht.transform
        coeffs = sht.analysis(x)  # (..., C, L + 1, M + 1)
        w = jax.lax.complex(self.weight[...][0], self.weight[...][1])
        mixed = jnp.einsum("...ilm,iol->...olm", coeffs, w, precision=_HIGHEST)
        return sht.synthesis(mixed)
