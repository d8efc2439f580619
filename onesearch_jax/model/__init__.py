"""The OneSearch generator: NNX T5-1.1 encoder-decoder + Q-Former, losses.

Never imports data/, seqio or TensorFlow: the model sees arrays only.
"""

from onesearch_jax.model.configs import ModelConfig, model_config
from onesearch_jax.model.model import LossConfig, loss_fn, metric_sums
from onesearch_jax.model.transformer import EncoderDecoder, create_model

__all__ = [
  "EncoderDecoder",
  "LossConfig",
  "ModelConfig",
  "create_model",
  "loss_fn",
  "metric_sums",
  "model_config",
]
