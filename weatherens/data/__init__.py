"""The data layer: ERA5-schema stores in, canonical xarray datasets and numpy batches out.

`open` is the single entry point for stores; `DataError` is what bad input raises.
"""

from weatherens.data.era5 import DataError, check_training_ready, open  # noqa: A004

__all__ = ["DataError", "check_training_ready", "open"]
