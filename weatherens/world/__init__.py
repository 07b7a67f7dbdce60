"""The physics world: the project's own atmosphere, a data source like any ERA5 store.

A Held-Suarez run of dinosaur's primitive equations (`model`), archived in the ERA5 / WeatherBench 2
schema with its full model state saved every few days (`store`); the analysis of that archive back
into a model state (`analysis`), the analysis and model errors learnt where the truth is known
(`initial_uncertainty`, `model_error`), and the physics ensembles that are the ML ensemble's
yardsticks (`ensembles`). Only this package imports dinosaur: `data -> model -> train -> infer`
never does, and `verify` scores the world's forecasts as it scores any other.
"""
