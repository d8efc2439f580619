"""onesearch_jax: OneSearch generative e-commerce search in JAX/Flax."""

__version__ = "0.1.0"
