"""The edges: command-line interface, configurations and presets, experiments, plotting, validation.

Nothing outside this package imports it.
"""
