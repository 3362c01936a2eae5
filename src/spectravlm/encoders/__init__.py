"""Encoders: transformer blocks, the sensor-native encoder, SAR front-end (and temporal/fusion encoders)."""
