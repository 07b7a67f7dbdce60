"""The stochastic spherical forecaster: layers, noise, network and the one-step predictor."""
