"""Grad-CAM of the M²CNN heads (``gradcam``), the pictures drawn from it (``pictures``) and the
files written for photographs (``files``)."""

from m2cnn_tf.explain.files import *  # noqa: F401,F403
from m2cnn_tf.explain.gradcam import *  # noqa: F401,F403
from m2cnn_tf.explain.pictures import *  # noqa: F401,F403
