"""The M²CNN network: architecture and switch, weight transfer between stages, accounting."""

from m2cnn_tf.model.architecture import *  # noqa: F401,F403
from m2cnn_tf.model.inference import *  # noqa: F401,F403
