"""Building blocks of the spherical forecaster (flax.nnx), on channels-last arrays (..., lat, lon, channel).

Channels last, because on CPU the pointwise layers are then plain (points x C) @ (C x C') matmuls
and the layer norm reduces over contiguous memory, which makes the network's gradient faster than
with channels before the grid (measured in docs/benchmarks.md). The parameters do not depend on
the layout.

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

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from weatherens.sphere.sht import SphericalHarmonicTransform

_HIGHEST = jax.lax.Precision.HIGHEST
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _product(op, a: jax.Array, b: jax.Array, compute_dtype) -> jax.Array:
    """op(a, b) (jnp.dot or an einsum) in float32 at Precision.HIGHEST, or, with compute_dtype bfloat16,
    with both operands rounded to bfloat16 and float32 accumulation (mixed precision as in Micikevicius
    et al. 2018: float32 parameters, bfloat16 matmul operands, float32 sums). The result is float32."""
    if compute_dtype == jnp.float32:
        return op(a, b, precision=_HIGHEST)
    return op(a.astype(compute_dtype), b.astype(compute_dtype), preferred_element_type=jnp.float32)


def contract(spec: str, a: jax.Array, b: jax.Array, compute_dtype=jnp.float32) -> jax.Array:
    """jnp.einsum(spec, a, b) in `compute_dtype` (`_product`)."""
    return _product(functools.partial(jnp.einsum, spec), a, b, compute_dtype)


class ChannelLinear(nnx.Module):
    """y[..., o] = sum_i x[..., i] W[i, o] + b[o]; LeCun-normal W (or zeros); the product in `compute_dtype`."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs, zero: bool = False, compute_dtype=jnp.float32):
        init = nnx.initializers.zeros if zero else nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.compute_dtype = compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        # one 2-D matmul: on CPU its gradient is faster than an einsum's over (..., i) (docs/benchmarks.md)
        y = _product(jnp.dot, x.reshape(-1, kernel.shape[0]), kernel, self.compute_dtype)
        return y.reshape(x.shape[:-1] + (kernel.shape[1],)) + self.bias[...]


class PointwiseMLP(nnx.Module):
    """cin -> hidden -> cout at every grid point, GELU in between; `zero_out` zero-initialises the output layer."""

    def __init__(self, cin: int, hidden: int, cout: int, *, rngs: nnx.Rngs, zero_out: bool = False,
                 compute_dtype=jnp.float32):
        self.inner = ChannelLinear(cin, hidden, rngs=rngs, compute_dtype=compute_dtype)
        self.outer = ChannelLinear(hidden, cout, rngs=rngs, zero=zero_out, compute_dtype=compute_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.outer(jax.nn.gelu(self.inner(x)))


class ConditionalLayerNorm(nnx.Module):
    """LN over the channel axis (-1), then scale (1 + z A) and shift (z B) from the noise vector z.

    x: (..., lat, lon, C); z: (..., D) with the same leading dims. A and B (D, C) start at zero.
    `shift=False` keeps the scale only: z B is constant over the sphere, so the shift adds the noise
    to every channel's global mean (degree 0) at every block, while the scale only modulates the
    normalised field's own pattern.
    """

    def __init__(self, channels: int, noise_dim: int, *, rngs: nnx.Rngs, eps: float = 1e-6, shift: bool = True):
        self.eps = eps
        self.scale = nnx.Param(jnp.zeros((noise_dim, channels), jnp.float32))
        self.shift = nnx.Param(jnp.zeros((noise_dim, channels), jnp.float32)) if shift else None

    def __call__(self, x: jax.Array, z: jax.Array) -> jax.Array:
        mean = x.mean(axis=-1, keepdims=True)
        var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
        y = (x - mean) * jax.lax.rsqrt(var + self.eps)
        gamma = 1.0 + jnp.einsum("...d,dc->...c", z, self.scale[...], precision=_HIGHEST)
        if self.shift is None:
            return y * gamma[..., None, None, :]
        beta = jnp.einsum("...d,dc->...c", z, self.shift[...], precision=_HIGHEST)
        return y * gamma[..., None, None, :] + beta[..., None, None, :]


class TransformSlot:
    """Holds a transform as a static (non-pytree) attribute of the modules that share it: not a parameter.

    A jitted function that closes over the slot's transform folds its tables into the program as
    constants; `Predictor.with_tables` instead puts traced tables (arguments of the jitted
    function) in the slot while the function traces, and the concrete ones back afterwards.
    """

    def __init__(self, transform: SphericalHarmonicTransform):
        self.transform = transform


_ORDER_CHUNKS = 4  # chosen by timing 1, 2, 4 and 8 groups (docs/benchmarks.md)


def order_chunks(orders: int) -> list[tuple[int, int]]:
    """[(m0, m1), ...]: `_ORDER_CHUNKS` (or fewer) contiguous groups covering orders 0..orders - 1."""
    bounds = np.unique(np.linspace(0, orders, min(_ORDER_CHUNKS, orders) + 1).astype(int))
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class SpectralConvolution(nnx.Module):
    """y_lm[o] = sum_i W_l[i, o] x_lm[i] in spherical-harmonic space (SFNO's "driscoll-healy" mixing).

    Complex weights W (C_in, C_out, L + 1), stored as (2 [real, imaginary], C_in, C_out, L + 1) and
    initialised with variance 1 / C_in; the transform is the grid's `SphericalHarmonicTransform`
    truncated at its lmax (so degrees above it are dropped), given itself or in a `TransformSlot`
    that the blocks of a network share.

    x: (..., lat, lon, C) -> (..., lat, lon, C). The zonal transform is a matmul with the
    transform's `zonal_tables` where it has them (its gradient needs no transposes of the
    activations' minor axis; `SphericalHarmonicTransform(zonal_matmul=...)`) and an rfft otherwise. The three
    Legendre and mixing contractions are real batched matmuls in a layout that puts the batch
    dimension of each first (analysis per order m, the mix per degree l, synthesis per m), with
    real and imaginary parts stacked on the channel axis, so the complex product is one real
    matmul with [[W_re, W_im], [-W_im, W_re]]. The orders go in
    `_ORDER_CHUNKS` groups, each contracting only the degrees l >= its lowest m, which skips most
    of the zero triangle l < m (3/8 of the work with 4 groups). The transform's maths and
    normalisation are those of `SphericalHarmonicTransform.analysis` / `.synthesis`.
    """

    def __init__(self, channels: int, sht: SphericalHarmonicTransform | TransformSlot, *, rngs: nnx.Rngs,
                 compute_dtype=jnp.float32):
        self._sht = sht if isinstance(sht, TransformSlot) else TransformSlot(sht)
        self.compute_dtype = compute_dtype
        sht = self._sht.transform
        shape = (2, channels, channels, sht.lmax + 1)
        self.weight = nnx.Param(jax.random.normal(rngs.params(), shape, jnp.float32) * (0.5 / channels) ** 0.5)

    def __call__(self, x: jax.Array) -> jax.Array:
        sht = self._sht.transform
        lead, (nlat, nlon, c) = x.shape[:-3], x.shape[-3:]
        x = x.reshape((-1, nlat, nlon, c)).astype(sht.dtype)
        w_re, w_im = jnp.moveaxis(self.weight[...], -1, 1)  # (l, C_in, C_out) each
        real_form = jnp.concatenate([jnp.concatenate([w_re, w_im], axis=2),
                                     jnp.concatenate([-w_im, w_re], axis=2)], axis=1)  # (l, 2C_in, 2C_out)
        if sht.zonal_tables is not None:  # zonal transform as matmuls, orders first (m, lat, N, 2C)
            forward, inverse = sht.zonal_tables  # in float32 whatever compute_dtype, as the FFT is
            parts = contract("cmi,njik->mjnck", forward, x).reshape(sht.mmax + 1, nlat, x.shape[0], 2 * c)
            out = self._mix(parts, "mjnk", real_form)  # (m, lat, N, 2C_out)
            out = out.reshape(out.shape[:3] + (2, out.shape[-1] // 2))
            y = contract("icm,mjnco->njio", inverse, out)
        else:  # rfft over longitude, channels last (N, lat, m, 2C)
            four = jnp.fft.rfft(x, axis=-2, norm="forward")[:, :, : sht.mmax + 1]
            out = self._mix(jnp.concatenate([four.real, four.imag], axis=-1), "njmk", real_form)
            cout = out.shape[-1] // 2
            four = jax.lax.complex(out[..., :cout], out[..., cout:])
            four = jnp.pad(four, [(0, 0), (0, 0), (0, nlon // 2 + 1 - (sht.mmax + 1)), (0, 0)])
            y = jnp.fft.irfft(four, n=nlon, axis=-2, norm="forward")
        return y.reshape(lead + y.shape[-3:])

    def _mix(self, parts: jax.Array, layout: str, real_form: jax.Array) -> jax.Array:
        """Zonal coefficients [real | imaginary] (axes named by `layout`: m order, j latitude, n sample,
        k channel) -> the same after Legendre analysis, the per-degree channel mix and Legendre
        synthesis, order group by order group (`order_chunks`). The Legendre contractions put the table
        first so that the channels stay the minor axis of every product (on CPU a transpose that moves the
        minor axis costs more than the matmul, docs/benchmarks.md)."""
        sht, cd = self._sht.transform, self.compute_dtype
        axis, out_layout = layout.index("m"), layout.replace("k", "o")
        pieces = []
        for m0, m1 in order_chunks(sht.mmax + 1):  # orders m0 <= m < m1 have degrees l >= m0 only
            group = jax.lax.slice_in_dim(parts, m0, m1, axis=axis)
            coeffs = contract(f"mlj,{layout}->lmnk", sht.analysis_table[m0:m1, m0:], group, cd)
            mixed = contract("lmnk,lko->lmno", coeffs, real_form[m0:], cd)  # (l, m, N, 2C_out)
            pieces.append(contract(f"mjl,lmno->{out_layout}", sht.legendre_table[m0:m1, :, m0:], mixed, cd))
        return jnp.concatenate(pieces, axis=axis)
