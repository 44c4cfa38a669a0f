"""Two-eye fusion: a patient-level head on the frozen network's features.

``head`` (pairing eyes, the head, its graph for serving, saving and loading), ``fitting``
(features, training, ``fit_and_save`` = fuse.py) and ``report`` (per-eye against fused kappa).
"""

from m2cnn_tf.fusion.fitting import *  # noqa: F401,F403
from m2cnn_tf.fusion.head import *  # noqa: F401,F403
from m2cnn_tf.fusion.report import *  # noqa: F401,F403
