"""weatherens: ML ensemble weather forecasting in JAX.

Data flows one way: ERA5-schema zarr -> data -> model -> train -> checkpoint -> infer ->
forecast zarr -> verify. See README.md and the design notes for the conventions.
"""

__version__ = "0.1.0"
