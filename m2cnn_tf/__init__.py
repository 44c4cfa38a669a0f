"""m2cnn_tf: M²CNN (Multi-Cell Multi-Task CNNs for diabetic-retinopathy grading) in TF2 / Keras 3.

Modules, one responsibility each:
  config       every constant of the paper and every open choice, named once
  image_io     reading photographs from bytes or files, with clear per-file errors
  fundus       locating the fundus disc, cropping, scaling and Eq. 1 normalisation
  synthetic    synthetic fundus photographs with known grades and lesion masks
  model        the M²CNN Keras model (BaseNet, Multi-Cell switch, multi-task heads)
"""

__version__ = "0.1.0"
