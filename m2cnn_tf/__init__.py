"""m2cnn_tf: M²CNN (Multi-Cell Multi-Task CNNs for diabetic-retinopathy grading) in TF2 / Keras 3.

Modules, one responsibility each:
  config       every constant of the paper and every open choice, named once
  image_io     reading photographs from bytes or files, with clear per-file errors
  fundus       locating the fundus disc, cropping, scaling and Eq. 1 normalisation
  synthetic    synthetic fundus photographs with known grades and lesion masks
  sources, splits, builder, build_worker, records, locking
               the TFRecord build: inputs, patient-level splits, atomic resumable shards
  input_pipeline  tf.data reading, augmentation and class balancing
  model        the M²CNN Keras model (BaseNet, Multi-Cell switch, multi-task heads)
  losses       the multi-task loss of Eq. 2–4, term by term
  metrics      quadratic weighted kappa, accuracy and MSE from accumulated confusion matrices
  optimizers   one optimiser per learning-rate group (LR1 fine-tune, LR2 new), wrapped as one
  distribution tf.distribute strategies, mixed precision, logical CPU devices
  checkpoints  a run's folder: rolling and best checkpoints, --init sources, load_trained_model
  summaries    metrics.jsonl, TensorBoard scalars and confusion-matrix images
  training     the training loop (train.py): staged fine-tuning, evaluation, resume
  thresholds   score → grade cuts fitted for kappa
  graph_preprocess  the TF-graph twin of fundus preprocessing, for serving
  serving, predictor, evaluation  export (export.py), prediction and evaluation reports
  explain      Grad-CAM at the last feature map, in the export too (explain.py)
  fusion       two-eye fusion: a patient-level head on frozen features (fuse.py, grade_patient)
  tta          test-time augmentation: the disc's 90° rotations and mirror, outputs averaged
  stats        bootstrap intervals over patients, referable-DR ROC/AUC, calibration
  report       report.md with ROC and reliability plots drawn with OpenCV
  faults       fault-injection hooks (M2CNN_FAULTS) for tests/reliability; inert by default
"""

__version__ = "0.1.0"
