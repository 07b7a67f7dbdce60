"""weatherens: ML ensemble weather forecasting in JAX.

Data flows one way: ERA5-schema zarr -> data -> model -> train -> checkpoint -> infer ->
forecast zarr -> verify, with the physics world (`weatherens.world`) as a data source. See README.md and
docs/architecture.md for the layout and the conventions.
"""

__version__ = "0.1.0"
