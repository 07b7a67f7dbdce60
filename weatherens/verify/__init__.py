"""Verification of ensemble forecasts against a truth dataset."""
