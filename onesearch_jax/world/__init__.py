"""The data layer: KuaiSearch-schema files, the simulated world, real loaders.

This package is the ground floor: it imports nothing else of onesearch_jax.
"""
