"""Variable and dimension aliases of ERA5-schema stores, and ERA5 units.

Long names and units follow WeatherBench 2 / ARCO-ERA5; short names are ECMWF's
(GRIB paramId short names as in the CDS netCDF files).
"""

from __future__ import annotations

# short name -> WeatherBench 2 long name
SHORT_TO_LONG: dict[str, str] = {
    "z": "geopotential",
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "w": "vertical_velocity",
    "q": "specific_humidity",
    "r": "relative_humidity",
    "ciwc": "specific_cloud_ice_water_content",
    "clwc": "specific_cloud_liquid_water_content",
    "t2m": "2m_temperature",
    "2t": "2m_temperature",
    "d2m": "2m_dewpoint_temperature",
    "u10": "10m_u_component_of_wind",
    "10u": "10m_u_component_of_wind",
    "v10": "10m_v_component_of_wind",
    "10v": "10m_v_component_of_wind",
    "msl": "mean_sea_level_pressure",
    "sp": "surface_pressure",
    "tp": "total_precipitation",
    "sst": "sea_surface_temperature",
    "siconc": "sea_ice_cover",
    "skt": "skin_temperature",
    "tcwv": "total_column_water_vapour",
    "tisr": "toa_incident_solar_radiation",
    "lsm": "land_sea_mask",
    "orography": "geopotential_at_surface",
}

# long name -> units as ERA5 writes them
UNITS: dict[str, str] = {
    "geopotential": "m**2 s**-2",
    "temperature": "K",
    "u_component_of_wind": "m s**-1",
    "v_component_of_wind": "m s**-1",
    "vertical_velocity": "Pa s**-1",
    "specific_humidity": "kg kg**-1",
    "relative_humidity": "%",
    "specific_cloud_ice_water_content": "kg kg**-1",
    "specific_cloud_liquid_water_content": "kg kg**-1",
    "2m_temperature": "K",
    "2m_dewpoint_temperature": "K",
    "10m_u_component_of_wind": "m s**-1",
    "10m_v_component_of_wind": "m s**-1",
    "mean_sea_level_pressure": "Pa",
    "surface_pressure": "Pa",
    "total_precipitation": "m",
    "sea_surface_temperature": "K",
    "sea_ice_cover": "(0 - 1)",
    "skin_temperature": "K",
    "total_column_water_vapour": "kg m**-2",
    "toa_incident_solar_radiation": "J m**-2",
    "land_sea_mask": "(0 - 1)",
    "geopotential_at_surface": "m**2 s**-2",
}

# long name -> (ERA5 long_name attribute, CF standard_name) for the variables forecasts are written with
DESCRIPTIONS: dict[str, tuple[str, str | None]] = {
    "geopotential": ("Geopotential", "geopotential"),
    "temperature": ("Temperature", "air_temperature"),
    "u_component_of_wind": ("U component of wind", "eastward_wind"),
    "v_component_of_wind": ("V component of wind", "northward_wind"),
    "surface_pressure": ("Surface pressure", "surface_air_pressure"),
    "2m_temperature": ("2 metre temperature", None),
    "mean_sea_level_pressure": ("Mean sea level pressure", "air_pressure_at_mean_sea_level"),
    "10m_u_component_of_wind": ("10 metre U wind component", "eastward_wind"),
    "10m_v_component_of_wind": ("10 metre V wind component", "northward_wind"),
    "specific_humidity": ("Specific humidity", "specific_humidity"),
}

# canonical dims of a forecast store (WeatherBench 2): the ensemble member and the lead time
MEMBER_DIM = "number"
LEAD_DIM = "prediction_timedelta"

# dimension / coordinate aliases -> canonical name
DIM_ALIASES: dict[str, str] = {
    "lat": "latitude",
    "lon": "longitude",
    "isobaricInhPa": "level",
    "pressure_level": "level",
    "plev": "level",
    "lev": "level",
    "valid_time": "time",
    "time_index": "time",
    "datetime": "time",
    "init_time": "time",
    "realization": "number",
    "member": "number",
    "lead_time": "prediction_timedelta",
    "step": "prediction_timedelta",
}


def long_name(name: str) -> str:
    """The WeatherBench 2 long name of a variable given by short or long name."""
    return SHORT_TO_LONG.get(name, name)


def channel_name(variable: str, level: int | None) -> str:
    """The name of one model channel, e.g. 'temperature@850' or '2m_temperature'."""
    return variable if level is None else f"{variable}@{int(level)}"


def attrs(variable: str) -> dict[str, str]:
    """CF attributes of a variable by long name: units (ERA5's), long_name and standard_name where known."""
    out = {"units": UNITS[variable]} if variable in UNITS else {}
    long, standard = DESCRIPTIONS.get(variable, (None, None))
    out.update({k: v for k, v in (("long_name", long), ("standard_name", standard)) if v is not None})
    return out


def parse_channel(name: str) -> tuple[str, int | None]:
    """Inverse of `channel_name`: 'temperature@850' -> ('temperature', 850), '2m_temperature' ->
    ('2m_temperature', None). Levels are positive integers (hPa); anything else is a ValueError."""
    variable, sep, level = name.partition("@")
    if not sep:
        return name, None
    if not variable or not level.isdigit() or int(level) <= 0:
        raise ValueError(f"channel {name!r}: expected 'variable@level' with a positive integer level in hPa")
    return variable, int(level)
