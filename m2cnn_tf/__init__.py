"""m2cnn_tf: M²CNN (Multi-Cell Multi-Task CNNs for diabetic-retinopathy grading) in TF2 / Keras 3.

Sub-packages by stage; each imports only the ones listed below it (setup.cfg's import-linter
contracts, checked by tests/test_architecture.py):

  evaluate    grading a data set (collect), the report and its pictures (reporting)
  serving     the export's contract (signatures), the writer (export), predictors, TTA,
              explainers — everything that opens a trained model or an export
  explain     Grad-CAM in the graph (gradcam), its pictures and files
  fusion      two-eye fusion: the head and its graph, fitting, per-eye vs fused report
  train       the loop, losses, optimizers, checkpoints, summaries, distribution
  grading     score → grade, confusion counts and kappa, thresholds, statistics, assessment
  model       the M²CNN network (architecture), weight transfer, parameter/FLOP accounting
  data        sources, splits, records, the TFRecord builder and its workers, tf.data input,
              synthetic photographs
  preprocess  reading photographs (image_io), Eq. 1 normalisation (fundus) and its TensorFlow
              twin for serving (graph)
  util        atomic writes, plots, locking, memory settings, fault injection, progress
  config      every constant of the paper and every open choice, named once
"""

__version__ = "0.1.0"
