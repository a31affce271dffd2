"""Typed models for everything that crosses a boundary: the CRD and the telemetry wire protocol."""
