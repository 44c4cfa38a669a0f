"""Every number of the method, named once.

Paper constants (Zhou et al., M²CNN) carry the section they come from; choices the paper leaves
open carry the reason we made them (see ../shared/docs/PAPER_NOTES.md, "Where the paper is
silent"). Code elsewhere in the package reads these objects and never repeats a literal.
"""

from __future__ import annotations

import dataclasses
import os

NUM_GRADES = 5  # ICDR grades 0 (no DR) … 4 (PDR), paper Fig. 1.


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Fundus preprocessing: border removal, then Eq. 1 ``I_c = α·I + β·G(ρ)*I + γ``."""

    # --- Eq. 1, paper section III-A ("empirically fixed") ---
    alpha: float = 4.0  # weight of the image
    beta: float = -4.0  # weight of the Gaussian-blurred image (subtracts local average colour)
    rho: float = 10.0  # σ of G, in pixels at a disc radius of ``rho_reference_radius`` (below)
    gamma: float = 128.0  # offset; also the value everywhere outside the circular mask

    # --- choices the paper leaves open ---
    # The paper does not say at which image scale ρ = 10 px holds. Eq. 1 is Ben Graham's
    # (paper ref. [6]), who blurred with σ = 10 at a disc radius of 300 px (σ = radius / 30).
    # We keep that ratio, so the filter covers the same part of the retina at every size.
    rho_reference_radius: float = 300.0
    # Graham's circular mask: keep the disc up to 0.9 × its radius, fill the rest with γ; hides
    # the dark rim of the lens and the ring Eq. 1 would draw there.
    mask_ratio: float = 0.9
    # Eq. 1 is computed once, at max(this, the largest requested size); every smaller size is
    # resampled from that one picture, so 224, 448 and 720 are the same image at three scales
    # whichever sizes a caller asks for (training, serving and a one-size build agree).
    normalization_size: int = 720
    # A Gaussian this wide (σ ≈ 12 px at 720) has no energy above a small fraction of the
    # sampling rate, so it is computed on a copy shrunk until σ is about this many pixels and
    # upsampled back; ~20× cheaper than blurring at full size, within a grey level of it.
    blur_sigma_at_reduced_scale: float = 3.0

    # Resampling: shrinking by up to this factor uses bilinear interpolation; by more, the image
    # is resampled to twice the size and halved by an exact 2×2 mean (a pyramid step). Up to 2×
    # bilinear weighs about two source pixels per output pixel (no pixel is skipped) and is
    # 5–10× faster than OpenCV's area average at non-integer factors; beyond 2× it would skip
    # pixels and alias, which the 2×2 mean of a ≤ 2× picture does not.
    bilinear_max_shrink: float = 2.0

    # --- locating the field of view (find_fundus) ---
    # The circle is fitted on a copy whose longer side is about this many pixels.
    detection_size: int = 256
    # The background (frame) level is this percentile of the detection picture's brightness: the
    # black corners around the disc cover far more than 1 % of a fundus photograph...
    background_percentile: float = 1.0
    # ...and the foreground (retina) level this one: the retina covers far more than the
    # brightest 10 %, so this is a retina pixel, yet below the optic disc and the reflexes (the
    # brightest few percent), which would push the threshold up.
    foreground_percentile: float = 90.0
    # A pixel belongs to the fundus when its brightness (R + G + B, saturated at 255)
    # exceeds the background level by this fraction of the (foreground − background) contrast...
    foreground_fraction: float = 0.15
    # ...and by at least this much (JPEG noise in the black frame stays below it; the darkest
    # EyePACS photographs have a retina only ~10 above the frame).
    min_foreground_contrast: float = 4.0
    # Fewer edge points than this cannot define a circle reliably: the smallest accepted disc
    # (``min_radius_fraction``) has about 270 at the detection size, a speck only a handful.
    min_edge_points: int = 24
    # RANSAC: 3-point circles tried (at fixed, low-discrepancy positions in the edge-point list);
    # the one most edge points agree with wins. At the lowest accepted share of points on the
    # circle (``min_circle_inliers`` = 0.25) three picks all lie on it with probability
    # 0.25³ = 1/64, so 64 trials expect a clean triple even then; usually most trials are clean.
    ransac_trials: int = 64
    # Each trial circle is scored on about this many evenly spaced edge points (EyePACS
    # photographs have 470–750 at the detection size, so every second or third): enough to rank
    # the candidates at a fraction of the cost; the winner is refitted and scored on all points.
    ransac_scoring_points: int = 200
    # An edge point lies on the circle when within this fraction of the detection size of it...
    circle_tolerance: float = 0.006
    # ...and a circle is accepted only when at least this share of the edge points do.
    min_circle_inliers: float = 0.25
    # A found circle is accepted only when at least this share of the pixels inside it (and in
    # the frame) are fundus and at most ``max_outside_fill`` of the pixels outside it are.
    min_inside_fill: float = 0.35
    max_outside_fill: float = 0.5
    # ...and its radius lies between these fractions of the photograph's shorter side.
    min_radius_fraction: float = 0.2
    max_radius_fraction: float = 1.5
    # A fundus camera's field of view sits on a black frame, so the darkest 1 % of a fundus
    # photograph is near black: channel-sum brightness ≤ 6 on all 990 EyePACS photographs in
    # ../shared/data, ≤ 12 on synthetic ones. A photograph whose darkest 1 % is brighter than
    # this (20 grey levels a channel) has no frame: a landscape or a document, not a fundus.
    max_frame_brightness: float = 60.0

    # --- image files ---
    # Decompression-bomb guard: a header claiming more pixels than this is refused before any
    # decode allocates memory (the largest EyePACS photographs are 4928 × 3264 ≈ 16 MP).
    max_image_pixels: int = 100_000_000


@dataclasses.dataclass(frozen=True)
class CellRepeats:
    """How many times each normal cell repeats (paper III-A: N1, N2, N3, N4)."""

    block35: int  # N1: Normal Cell-A (Inception-ResNet-A) repeats in BaseNet
    block17: int  # N2: Normal Cell-B (Inception-ResNet-B) repeats in BaseNet
    medial_block8: int  # N3: Normal Cell-C repeats after the first extra Reduction-B
    large_block8: int  # N4: Normal Cell-C repeats after the second extra Reduction-B
    # Normal Cell-C repeats that close BaseNet itself (Keras: block8_1 … block8_9 with ReLU, then
    # the activation-less block8_10); the paper counts them as part of Inception-ResNet-v2.
    basenet_block8: int = 10


# The paper's network and a one-repeat variant with the same stem and reductions (hence the same
# feature-map geometry) for tests and CPU demos.
VARIANTS = {
    "m2cnn": CellRepeats(block35=10, block17=20, medial_block8=10, large_block8=5),
    "tiny": CellRepeats(block35=1, block17=1, medial_block8=1, large_block8=1, basenet_block8=1),
}


# Momentum of the batch-norm moving statistics per variant. The paper's network keeps Keras'
# Inception-ResNet-v2 value. The tiny variant trains for tens to hundreds of steps in tests and
# the CPU demo; at 0.99 its moving averages would still mostly hold their initial values
# (0.99^100 = 0.37) and evaluation would see a constant network, so they settle faster.
BATCH_NORM_MOMENTUM = {"m2cnn": 0.99, "tiny": 0.9}


@dataclasses.dataclass(frozen=True)
class MultiCellConfig:
    """The Multi-Cell switch on the input side (paper II-C)."""

    medium_min_resolution: int = 350  # < 350 px: BaseNet only ("small")
    large_min_resolution: int = 700  # ≥ 700 px: medial cells + large cells
    min_resolution: int = 75  # the smallest input Keras' InceptionResNetV2 accepts


# Whether the switch runs: "auto" chooses the cells by resolution (M²CNN); "off" keeps BaseNet and
# the heads at any resolution — Table II's single-resolution BaseNet baselines at 448 and 720,
# whose last feature maps are Table I's "before switch" (12×12, 21×21).
MULTICELL_AUTO, MULTICELL_OFF = "auto", "off"
MULTICELL_MODES = (MULTICELL_AUTO, MULTICELL_OFF)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network around Keras' Inception-ResNet-v2: extra cells, multi-task heads (paper II)."""

    # --- Keras' Inception-ResNet-v2 numbers, repeated because the tiny BaseNet and the extra cells
    # are built from Keras' pieces (model/irv2.py); tests/test_model.py checks them against Keras ---
    block35_scale: float = 0.17  # residual scale of Block35 (Normal Cell-A)
    block17_scale: float = 0.1  # residual scale of Block17 (Normal Cell-B)
    block8_scale: float = 0.2  # residual scale of Block8 (Normal Cell-C)
    final_block8_scale: float = 1.0  # BaseNet's last Block8 adds its residual unscaled, no ReLU
    # Keras names that last Block8 "block8_10"; the tiny BaseNet keeps the name so that layers
    # line up by name with Keras' network and its ImageNet weights file.
    final_block8_index: int = 10
    # Reduction-B (Keras' mixed_7a): filters of each conv branch, which starts with a 1×1 conv,
    # ends with a 3×3 stride-2 valid conv and has 3×3 same convs in between; a 3×3/2 max-pool
    # branch passes the input through, so the width grows by the sum of the last filters (992).
    reduction_b_filters: tuple = ((256, 384), (256, 288), (256, 288, 320))
    # Block8 (Inception-ResNet-C) branches: 1×1 | 1×1 → 1×3 → 3×1; then a biased 1×1 conv back
    # to the input width. Builds the block (model/irv2.py) and feeds the parameter arithmetic.
    block8_branch_filters: tuple = ((192,), (192, 224, 256))
    basenet_channels: int = 1536  # width of BaseNet's output, conv_7b_ac

    # --- choices the paper leaves open ---
    # Each group of extra cells ends as BaseNet does after its Block8s, with a 1×1 conv + BN + ReLU
    # (like conv_7b) back to BaseNet's width. The paper trains M²CNN "based on the weights of
    # BaseNet+MT" (III-A), so the multi-task heads must keep their shapes at 224, 448 and 720;
    # with this projection they do, and every cell group maps (h, w, 1536) → (h', w', 1536), so
    # the 448 model's medial cells are reused unchanged at 720. Reduction-B thus always takes 1536
    # channels to 2528, and the Block8s of both groups are 2528 wide.
    cell_output_channels: int = 1536
    # Dropout before the heads: Inception-ResNet-v2's own classifier keeps 0.8 of the pooled
    # features (Szegedy et al. 2016, Fig. 15); the paper does not say.
    dropout_rate: float = 0.2


PREPROCESS = PreprocessConfig()
MULTICELL = MultiCellConfig()
MODEL = ModelConfig()


# --- Command-line flags ---
# A config field that is also a flag carries its help text (and, for a fixed set of values, the
# allowed ones) in its metadata under these keys; m2cnn_tf/util/flags.py defines the scripts'
# flags from them, so a new setting is one edit here. Fields without help text are constants of
# the method, not flags.
FLAG_HELP = "help"
FLAG_CHOICES = "choices"


def setting(default, help_text: str, choices: tuple = ()):
    """A config field that is also a command-line flag (``util/flags.py``).

    Args:
      default: the field's default, which is the flag's default too.
      help_text: what the flag does, for ``--help``.
      choices: the allowed values of a text field with a fixed set of them (an enum flag).

    Returns:
      A ``dataclasses.field``.
    """
    metadata = {FLAG_HELP: help_text}
    if choices:
        metadata[FLAG_CHOICES] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class BuilderConfig:
    """One TFRecord build (build_tfrecords.py, ``builder.build``): every flag's default.

    All fields but ``num_workers`` and ``max_error_fraction`` decide the bytes of a build.
    """

    # The paper's three input sizes (Table I, Fig. 4).
    resolutions: tuple[int, ...] = setting(
        (224, 448, 720), "Square sizes to store; each photograph is decoded once for all of them.")
    # Eq. 1 output is mid-grey with fine, high-contrast detail (vessels, microaneurysms a few
    # pixels wide). TFDS stores Graham's images at quality 72, which smears exactly that. At 95
    # with 4:4:4 colour the round trip costs 1.5 grey levels on average at 224 px and 1.1 at
    # 720 px (measured on 20 EyePACS photographs; tests/test_builder.py bounds it by 2), for
    # 23 KB and 161 KB per image.
    jpeg_quality: int = setting(
        95, "JPEG quality of stored images; 95 keeps the fine detail Eq. 1 brings out "
        "(microaneurysms, small vessels) within about one grey level.")
    # Records per shard: at 720 px about 250 × 160 KB ≈ 40 MB, big enough for fast sequential
    # reads, small enough that an interrupted build loses little and tf.data can interleave.
    examples_per_shard: int = setting(250, "Photographs per shard.")
    # Share of patients held out for validation when the source fixes no validation split.
    val_fraction: float = setting(
        0.1, "Share of patients held out for validation (at least one; spread over the grade "
        "strata in proportion to their sizes; both eyes of a patient stay together). Ignored "
        "when the source fixes a validation split (Kaggle Usage, TFDS).")
    seed: int = setting(0, "Seed of the validation split and the shard order.")
    # A build fails when more than this share of its inputs had to be skipped.
    max_error_fraction: float = setting(
        0.02, "Fail the build when more than this share of the inputs had to be skipped (all "
        "are listed in errors.csv).")
    # How many photographs are processed at once; does not change the output.
    num_workers: int = setting(0, "Worker processes (0: one per core).")
    # Default output: tfrecords/<source name>.
    output_root: str = "tfrecords"
    # Written into manifest.json; bump when the record format or preprocessing changes.
    version: str = "1"

    def validate(self) -> None:
        """Raises ValueError naming the first setting a build cannot use."""
        if not self.resolutions:
            raise ValueError("--resolutions is empty; give sizes such as 224,448,720")
        for r in self.resolutions:
            if not isinstance(r, int) or r < 32:
                raise ValueError(f"resolution {r!r} is not an integer ≥ 32")
        if len(set(self.resolutions)) != len(self.resolutions):
            raise ValueError(f"--resolutions has duplicates: {self.resolutions}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg_quality must be 1–100, got {self.jpeg_quality}")
        if self.examples_per_shard < 1:
            raise ValueError(f"--examples_per_shard must be ≥ 1, got {self.examples_per_shard}")
        if not 0.0 <= self.max_error_fraction <= 1.0:
            raise ValueError(f"--max_error_fraction must be in [0, 1], got "
                             f"{self.max_error_fraction}")


BUILDER = BuilderConfig()


# --- Training (paper III-A fixes the two learning rates and, by Eq. 4, equal loss weights) ---
LR_FINETUNE = 1e-4  # LR1: weights restored from the stage before (or ImageNet), fine-tuned
LR_NEW = 1e-3  # LR2: weights new at this stage (cells the resolution adds; all of them from scratch)
LOSS_WEIGHTS = (1.0, 1.0)  # (cross-entropy L1, MSE of the score L2): Eq. 4 adds them unweighted

# The head a run is selected (best checkpoint) and evaluated by follows its loss. Table II tests
# the MSE-only runs "by scores", the CE-only runs "by prob." and the multi-task runs both,
# preferring scores (III-B). A run trained with cross-entropy alone has an untrained score head,
# so it is read by the argmax of its probabilities; a run that trains the score (MSE alone or
# multi-task) by its score.
PREDICT_BY_SCORE = "score"
PREDICT_BY_PROBABILITIES = "probabilities"


def prediction_head(loss_weights) -> str:
    """The head a run trained with ``loss_weights`` (CE, MSE) is selected and evaluated by.

    Args:
      loss_weights: the weights of the cross-entropy and of the score's MSE.

    Returns:
      ``PREDICT_BY_PROBABILITIES`` when the MSE weight is 0 (cross-entropy only), else
      ``PREDICT_BY_SCORE``.
    """
    return PREDICT_BY_PROBABILITIES if loss_weights[1] == 0 else PREDICT_BY_SCORE


# A stage initialised from an earlier stage restores that stage's heads, which now read the new
# cells' features, and fine-tunes them at LR1 with the rest of what it restored (the paper trains
# M²CNN "based on the weights of BaseNet+MT", III-A); "new" starts them afresh and trains them at
# LR2, like the new cells.
HEADS_RESTORE, HEADS_NEW = "restore", "new"
HEADS_MODES = (HEADS_RESTORE, HEADS_NEW)

# The shape of both learning rates over a run. The paper describes two fixed rates (III-A), so
# constant is the default; the others are for experiments beyond it.
LR_CONSTANT, LR_COSINE, LR_STEP = "constant", "cosine", "step"
LR_SCHEDULES = (LR_CONSTANT, LR_COSINE, LR_STEP)

# Memory options of the train step (model/forward.py, train/step.py; README "GPU memory →
# flags"). None changes a variable or a checkpoint. Recompute: keep every activation (none),
# recompute each Inception-ResNet cell's in the backward pass (cells), or cells and the stem
# (all). Batch norm: normalise with the batch's statistics and update the moving ones (train),
# or normalise with the moving statistics and keep them (frozen).
RECOMPUTE_NONE, RECOMPUTE_CELLS, RECOMPUTE_ALL = "none", "cells", "all"
RECOMPUTE_MODES = (RECOMPUTE_NONE, RECOMPUTE_CELLS, RECOMPUTE_ALL)
BATCH_NORM_TRAIN, BATCH_NORM_FROZEN = "train", "frozen"
BATCH_NORM_MODES = (BATCH_NORM_TRAIN, BATCH_NORM_FROZEN)

# --- The paper's schedule, in steps; the presets below read these, nothing else repeats them ---
# Fig. 4: "224@20k" is the 224 stage; "448*@32k" is 448 fine-tuned from 224@20k for 12k more.
PAPER_STEPS_224 = 20_000
PAPER_STEPS_448 = 12_000
# The paper gives no length for the 720 stage. Ours: the 448 stage's 12k, the one fine-tuning
# length the paper measured — in 12k steps from 224@20k the medial cells, new at LR2, already
# beat 448 trained directly for 20k (Fig. 4). The large cells are the same kind of new group
# (N4 = 5 Block8 against N3 = 10), so they get the same budget rather than an unmeasured one;
# a 720 step costs about (720/448)² ≈ 2.6× a 448 step.
PAPER_STEPS_720 = PAPER_STEPS_448
# Single-resolution runs from ImageNet (Table II's BaseNet columns, Fig. 4's "448@20k"): the
# paper gives no length for Table II; Fig. 4 trains 448 directly for 20k, the 224 stage's
# length, so every run that starts from ImageNet trains that long.
PAPER_STEPS_DIRECT = PAPER_STEPS_224
# Fig. 4's longer runs, in each run's own steps: "224@60k" (the 224 run continued), "448@26k"
# (448 directly, the wall-clock of 448*@40k) and "448*@40k" (the 448 stage continued to
# 40k − 20k of its own steps).
FIG4_STEPS_224_LONG = 60_000
FIG4_STEPS_448_DIRECT = 26_000
FIG4_STEPS_448_FINETUNE_LONG = 20_000


# Where a run goes when --model_dir is not given: runs/m2cnn_448 for the paper's variant at 448,
# the directory the next stage's --init names.
MODEL_DIR_TEMPLATE = "runs/{variant}_{resolution}"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (train.py): every flag's default, and every constant of the loop.

    Tests shrink this (``dataclasses.replace(TRAIN, variant="tiny", train_steps=2, …)``); train.py
    defines its flags from the fields made with ``setting`` and builds this from them. Fields the
    paper fixes say so; the rest say why we chose them.
    """

    # --- what to train, on what, from what ---
    # 224 → 448 → 720 is the paper's staging (II-C, Fig. 4).
    resolution: int = setting(
        224, "Input side in pixels; the data must have been built at it. 224 trains BaseNet+MT, "
        "448 adds the medial cells, 720 the large cells.")
    variant: str = setting(
        "m2cnn", "m2cnn: the paper's network; tiny: one repeat of every cell (tests, CPU demos).",
        choices=tuple(sorted(VARIANTS)))
    multicell: str = setting(
        MULTICELL_AUTO, "auto: the Multi-Cell switch picks the cells by resolution (M²CNN: "
        "medial cells from 350 px, large cells from 700 px); off: BaseNet and the heads at any "
        "resolution (the paper's BaseNet baselines at 448 and 720, Table II).",
        choices=MULTICELL_MODES)
    # "none" (everything new), "imagenet" (BaseNet from Keras' ImageNet weights, the paper's start
    # at 224), a Keras notop .h5 file, or the model directory / a checkpoint of an earlier stage.
    init: str = setting(
        "none", "Starting weights: none (random), imagenet (BaseNet from Keras' ImageNet "
        "weights; downloads), a Keras Inception-ResNet-v2 notop .h5 file, or the model "
        "directory of an earlier stage (e.g. runs/m2cnn_224; its best checkpoint, else its "
        "latest) or one checkpoint in it. Restored weights train at --lr_finetune, the rest at "
        "--lr_new.")
    heads: str = setting(
        HEADS_RESTORE, "With --init=<an earlier stage>: restore its heads and fine-tune them at "
        "--lr_finetune (restore), or start them afresh and train them at --lr_new like the new "
        "cells (new; init_report.json lists them as new).", choices=HEADS_MODES)
    data_dir: str = setting("", "A dataset folder written by build_tfrecords.py.")  # required
    # "" means model_dir_template.
    model_dir: str = setting("", f"Checkpoints and logs (default: {MODEL_DIR_TEMPLATE}).")
    model_dir_template: str = MODEL_DIR_TEMPLATE
    train_split: str = "train"
    # "train" evaluates on the (unaugmented) training images, for overfit checks.
    eval_split: str = setting("validation", "Split evaluated every --eval_every_steps.")

    # --- the loss (Eq. 2–4) ---
    lr_finetune: float = setting(
        LR_FINETUNE, "LR1: learning rate of the weights restored by --init (paper: 1e-4).")
    lr_new: float = setting(
        LR_NEW, "LR2: learning rate of the weights new at this stage (paper: 1e-3).")
    # The head a run is selected and evaluated by follows them (``prediction_head``).
    loss_weights: tuple[float, ...] = setting(
        LOSS_WEIGHTS, "Weights of the cross-entropy and the score's MSE (paper: 1,1; 1,0 and "
        "0,1 are Table II's CE-only and MSE-only runs). A run with MSE weight 0 keeps its best "
        "checkpoint and reports by the kappa of its probabilities (argmax), any other by the "
        "kappa of its score.")
    # L_reg = weight_decay · ½ Σ‖W‖² over conv and dense kernels (tf.nn.l2_loss's ½, so the
    # gradient is weight_decay · W). The paper gives no value; 4e-5 is what Inception-ResNet-v2
    # was trained with (TF-slim's inception_resnet_v2_arg_scope), the network BaseNet is.
    weight_decay: float = setting(
        4e-5, "Coefficient of L_reg = wd · ½ Σ‖W‖² over conv and dense kernels.")

    # --- optimiser: the paper names none ---
    # Adam: LR1 = 1e-4 and LR2 = 1e-3 are Adam's customary rates (its default is 1e-3), while SGD
    # at 1e-3 would barely move a new head. Not AdamW: Eq. 4 puts the decay in the loss as L_reg,
    # and decoupled decay would apply it a second time.
    optimizer: str = setting("adam", "Optimiser of both groups.", choices=("adam", "sgd"))
    adam_beta_1: float = 0.9  # Keras' (and Kingma & Ba's) defaults
    adam_beta_2: float = 0.999
    adam_epsilon: float = 1e-7
    sgd_momentum: float = 0.9  # only with optimizer="sgd"
    # float16 only: Keras' LossScaleOptimizer defaults (start high, halve on overflow).
    loss_scale_initial: float = 2.0**15
    loss_scale_growth_steps: int = 2000

    # --- learning-rate schedule: one shape for both groups, each at its own rate ---
    # Evaluated on the device from each group optimiser's step counter (``optimizers``), so a
    # resumed run continues where it stopped. Not in the paper (see ``LR_SCHEDULES``).
    lr_schedule: str = setting(
        LR_CONSTANT, "Shape of both learning rates over the run: constant (the paper's), cosine "
        "(from the full rate after warm-up down to 0 at --train_steps) or step (multiplied by "
        "--lr_step_factor at each of --lr_step_fractions of the steps after warm-up).",
        choices=LR_SCHEDULES)
    warmup_steps: int = setting(
        0, "Linear warm-up: over the first this many steps both rates rise from 1/warmup_steps "
        "of their value to the full value (0: none).")
    # The classic step decay (×0.1 twice, as in ResNet's and Inception's ImageNet schedules), at
    # half and three quarters of the run so that it scales with --train_steps.
    lr_step_fractions: tuple[float, ...] = setting(
        (0.5, 0.75), "With --lr_schedule=step: fractions (0–1, ascending) of the steps after "
        "warm-up at which both rates drop.")
    lr_step_factor: float = setting(
        0.1, "With --lr_schedule=step: what each drop multiplies both rates by.")

    # --- schedule, in steps (global batches) ---
    # Not in the paper. Training memory grows by ≈ 1.1 GB per 720 px image in float32 (measured
    # on CPU, bench/memory.py; ≈ 2.1 GB if every layer output were kept), so 16 asks ≈ 21 GB on
    # one GPU at 720: on a smaller card keep it and add the memory flags above (README "GPU
    # memory → flags") rather than lowering it; ≈ 0.08 GB per image at 224.
    batch_size: int = setting(16, "Global batch, split across replicas.")
    # The paper's 224 stage (Fig. 4): ≈ 9 passes over the 35,126 Kaggle training images at
    # batch 16. The presets give every stage and experiment run its own length.
    train_steps: int = setting(
        PAPER_STEPS_224, "Train until this many steps in all (a resumed run counts the steps "
        "already done). Default: the paper's 224 stage; --preset gives each stage its own.")
    # ≈ one pass over Kaggle's training set at batch 16 (35,126 / 16 ≈ 2,200).
    eval_every_steps: int = setting(
        2000, "Evaluate (and keep the best checkpoint) every this many steps, and at the end.")
    # Rolling checkpoints: at 720 px about 5–10 minutes of GPU time, the most a crash loses.
    checkpoint_every_steps: int = setting(
        500, "Save a rolling checkpoint every this many steps, and at the end.")
    # The best checkpoint is kept apart in best/, whatever this says.
    keep_checkpoints: int = setting(3, "Rolling checkpoints kept.")
    # To TensorBoard and metrics.jsonl.
    log_every_steps: int = setting(
        50, "Write loss terms, learning rates and images/s every this many steps.")

    # --- data ---
    # input_pipeline's rotation/flip/zoom/colour jitter.
    augment: bool = setting(True, "Rotate, flip, zoom and jitter training images.")
    # The paper mentions no resampling, and kappa is measured on the natural grade mix; a balanced
    # stream would shift the score head's prior towards the rare grades.
    class_balanced: bool = setting(
        False, "Draw training images with equal grade frequencies.")
    seed: int = setting(0, "Seed of weights, shuffling, augmentation and dropout.")
    # Bit-identical reruns on one machine cost speed: TensorFlow picks deterministic kernels and
    # tf.data keeps its order (each image paired with the same augmentation seed every run).
    deterministic: bool = setting(
        False, "Repeatable run: TensorFlow op determinism and a fixed data order and "
        "augmentation, so that the same command on the same machine gives bit-identical weights "
        "and metrics (slower).")

    # --- hardware ---
    strategy: str = setting(
        "default", "default: one device; mirrored: all GPUs of this host; multiworker: the "
        "cluster in TF_CONFIG; tpu: a TPU (--tpu).",
        choices=("default", "mirrored", "multiworker", "tpu"))
    # "" = the local TPU VM.
    tpu: str = setting("", "TPU name or address for --strategy=tpu.")
    mixed_precision: str = setting(
        "none", "Compute in 16 bits, keep float32 variables (float16 adds loss scaling).",
        choices=("none", "float16", "bfloat16"))
    # XLA: off by default. On this 2-core CPU it made the tiny variant's step slower (9.4 against
    # 10.9 images/s at 224, batch 4) and took 16 s more to compile; try it on GPU.
    jit_compile: bool = setting(False, "Compile the train step with XLA.")
    # Synchronised batch-norm statistics across replicas (used only with more than one). At 720 px
    # the per-replica batch is a few images, whose own mean and variance are noisy; synchronised,
    # a replicated step equals the single-device step on the global batch.
    sync_batch_norm: bool = True
    # For tests of --strategy=mirrored on a machine without GPUs.
    cpu_devices: int = setting(
        0, "Split the CPU into this many logical devices (to try --strategy=mirrored without "
        "GPUs; 0: leave it whole).")

    # --- memory (README "GPU memory → flags"; model/forward.py, train/step.py) ---
    # None of these changes a variable or a checkpoint: a run may resume or fine-tune with other
    # values. Measured per-image training memory and step-time costs: BENCHMARKS.md.
    # Off by default: it costs about one more forward pass per step (+≈ 30 % step time), and at
    # 224 and 448 px the default batch fits a 24 GB card without it.
    recompute: str = setting(
        "none", "Recompute activations in the backward pass instead of keeping them: none; "
        "cells: every Inception-ResNet cell (Block35/17/8, reductions); all: cells and the "
        "stem's convolutions. Same gradients, less memory, more compute.",
        choices=RECOMPUTE_MODES)
    # 1: the paper's one batch per step. K > 1 keeps --batch_size as the batch of one optimiser
    # step and computes it in K parts, so the memory is that of batch_size / K images.
    accumulate_steps: int = setting(
        1, "Split each step's batch into this many micro-batches, summing their gradients "
        "before one optimiser step (per replica; --batch_size must be a multiple of replicas × "
        "this). Batch norm in training mode sees each micro-batch alone.")
    # "train" is Keras' and the paper's default and right where every device sees many images
    # (224 px: 16 per GPU). "frozen" is the usual choice for fine-tuning on a few images per
    # device — the 720 px stage on one 16–24 GB card, or any --accumulate_steps > 1 — where batch
    # statistics are noise: the moving statistics learnt at the stage before are kept.
    batch_norm: str = setting(
        "train", "train: batch norm normalises with each batch's statistics and updates its "
        "moving statistics; frozen: every batch-norm layer normalises with its moving "
        "statistics and keeps them, while its offset (β) still trains.",
        choices=BATCH_NORM_MODES)
    # Empty: no profile. A few steps after the first (which traces the step) are representative.
    profile_steps: tuple[int, ...] = setting(
        (), "Write a TensorBoard profiler trace of steps A to B (--profile_steps=A,B, steps as "
        "logged) under MODEL_DIR/train/plugins/profile; view it with TensorBoard and its "
        "profile plugin (pip install tensorboard tensorboard-plugin-profile).")

    @property
    def prediction(self) -> str:
        """The head this run is selected and evaluated by (``prediction_head``)."""
        return prediction_head(self.loss_weights)


TRAIN = TrainConfig()


@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """Training the two-eye fusion head (fuse.py's flags). The paper has no fusion; every choice
    is ours."""

    # Adam at the main model's LR2 (a new head).
    learning_rate: float = setting(LR_NEW, "Adam learning rate of the head.")
    # Full-batch would do too; mini-batches of 64 let dropout and shuffling regularise on a few
    # hundred pairs.
    fusion_batch_size: int = setting(64, "Pairs per step when training the head.")
    max_epochs: int = setting(300, "Most epochs over the training pairs.")
    # Early stopping on the validation loss (CE + MSE, Eq. 4's weights): stop after this many
    # epochs without improvement and keep the best epoch's weights (or step 0's, if none beat it).
    patience: int = setting(30, "Epochs without a lower validation loss before stopping; the "
                            "best epoch's weights are kept (epoch 0 = the main model's heads "
                            "unchanged).")
    # L2 penalty (Keras' l2: factor · Σw²) on the correction read from the other eye's 1536
    # features: with a few hundred pairs, 1536 free weights per output would learn the training
    # split by heart; the six-number per-eye summaries carry most of what the other eye adds.
    l2: float = setting(1e-3, "L2 penalty on the correction read from the other eye's full "
                        "features.")
    # Dropout on the other eye's features before that correction, as before the main heads.
    dropout: float = setting(0.2, "Dropout on the other eye's features.")
    seed: int = setting(0, "Seed of the head's training.")

    def __post_init__(self):
        checks = {"learning_rate": self.learning_rate > 0,
                  "fusion_batch_size": self.fusion_batch_size >= 1,
                  "max_epochs": self.max_epochs >= 1, "patience": self.patience >= 1,
                  "l2": self.l2 >= 0, "dropout": 0 <= self.dropout < 1}
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"bad fusion setting(s) {', '.join(bad)}: learning_rate must be "
                             "> 0, fusion_batch_size, max_epochs and patience ≥ 1, l2 ≥ 0, "
                             "dropout in [0, 1)")


FUSION = FusionConfig()


# --------------------------------------------------------------------------------------------
# Presets: the paper's stages and every run of its experiments, named once
# --------------------------------------------------------------------------------------------
# ``python train.py --preset=NAME`` starts from one of these (flags given explicitly still win);
# README, demo.py and the notebook name them instead of writing a schedule of their own. Every
# preset's run lives in ``runs/<name>``, and a preset that starts from another's run names that
# folder as its --init; ``preset_config(name, runs_dir)`` moves both under another folder.

PRESET_RUNS_DIR = "runs"

# How a preset's run starts from its parent's:
RELATION_INIT = "init"  # a new run whose --init is the parent's folder (its best checkpoint)
# The parent's run trained on: a copy of the parent's folder (after the parent finished),
# resumed from its latest checkpoint up to this preset's train_steps, counted in that run.
# (train.py alone, in an empty folder, trains it from the parent's own --init instead.)
RELATION_CONTINUE = "continue"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named run: its settings and the run it starts from.

    Attributes:
      name: the preset's name (``--preset=NAME``; its run folder is ``runs/<name>``).
      config: the whole TrainConfig, but for ``data_dir``, which the command line gives.
      summary: one line for listings: what the run is and where the paper reports it.
      parent: the preset whose run this one starts from ("" for none).
      relation: ``RELATION_INIT`` or ``RELATION_CONTINUE`` with a parent, "" without.
    """

    name: str
    config: TrainConfig
    summary: str
    parent: str = ""
    relation: str = ""


def _run_dir(name: str) -> str:
    return f"{PRESET_RUNS_DIR}/{name}"


def _preset(name: str, summary: str, base: TrainConfig = TRAIN, parent: str = "",
            relation: str = "", **changes) -> Preset:
    """A Preset whose run folder is runs/<name> and whose --init is its parent's folder when
    it starts as a new stage of the parent."""
    changes.setdefault("model_dir", _run_dir(name))
    if relation == RELATION_INIT:
        changes["init"] = _run_dir(parent)
    return Preset(name, dataclasses.replace(base, **changes), summary, parent, relation)


def _continued(name: str, summary: str, parent: Preset, train_steps: int) -> Preset:
    return _preset(name, summary, parent.config, parent.name, RELATION_CONTINUE,
                   train_steps=train_steps)


_CE_ONLY, _MSE_ONLY = (1.0, 0.0), (0.0, 1.0)


def _paper_presets() -> list:
    """M²CNN's three stages (II-C), then every other run of Table II, Table III and Fig. 4."""
    p224 = _preset("paper_224", "M²CNN stage 1: BaseNet+MT at 224 from ImageNet (Table II "
                   "multi-task 224; Fig. 4 224@20k)", resolution=224, init="imagenet",
                   train_steps=PAPER_STEPS_224)
    # Batch norm at 448 and 720: "train", as the paper (Keras' default) — its step is one batch
    # of 16, and the memory flags leave that so. Each GPU of a data-parallel run sees 16 / GPUs
    # images (8 on two cards: statistics that still mean something, and sync_batch_norm pools
    # them). Where one card must take the 720 stage in micro-batches of 1–4 (README "GPU memory
    # → flags"), add --batch_norm=frozen: statistics of so few images are noise, and frozen
    # keeps those the 448 stage learnt on batches of 16.
    p448 = _preset("paper_448", "M²CNN stage 2: + medial cells at 448, fine-tuned from "
                   "paper_224 (Table II M²CNN 448; Fig. 4 448*@32k)", p224.config, p224.name,
                   RELATION_INIT, resolution=448, train_steps=PAPER_STEPS_448,
                   batch_norm=BATCH_NORM_TRAIN)
    p720 = _preset("paper_720", "M²CNN stage 3: + large cells at 720, fine-tuned from paper_448 "
                   "(Table II M²CNN 720; Table III M²CNN)", p448.config, p448.name,
                   RELATION_INIT, resolution=720, train_steps=PAPER_STEPS_720,
                   batch_norm=BATCH_NORM_TRAIN)
    presets = [p224, p448, p720]
    losses = (("mse", _MSE_ONLY, "MSE only"), ("ce", _CE_ONLY, "CE only"),
              ("mt", LOSS_WEIGHTS, "multi-task"))
    for resolution in (224, 448, 720):
        for short, weights, words in losses:
            if (short, resolution) == ("mt", 224):
                continue  # that run is paper_224 itself: at 224 no cells are switched on
            presets.append(_preset(
                f"basenet_{short}_{resolution}", f"BaseNet {words} at {resolution} from ImageNet, "
                f"no extra cells (Table II {words} {resolution})", resolution=resolution,
                init="imagenet", multicell=MULTICELL_OFF, loss_weights=weights,
                train_steps=PAPER_STEPS_DIRECT))
    presets += [
        _continued("fig4_224_60k", "paper_224 continued to 60k steps (Fig. 4 224@60k)", p224,
                   FIG4_STEPS_224_LONG),
        _preset("fig4_448_direct", "M²CNN at 448 from ImageNet, without the 224 stage (Fig. 4 "
                "448@20k, 448@26k)", resolution=448, init="imagenet",
                train_steps=FIG4_STEPS_448_DIRECT),
        _continued("fig4_448ft_40k", "paper_448 continued to 20k steps of its own (Fig. 4 "
                   "448*@40k)", p448, FIG4_STEPS_448_FINETUNE_LONG),
    ]
    return presets


# The CPU presets: the tiny variant on a few synthetic photographs. "rehearsal": the paper's
# staging in seconds (README); "demo": python demo.py's two stages, long enough to learn.
_TINY = dict(variant="tiny", init="none")


def _cpu_presets(paper: dict) -> list:
    r224 = _preset("rehearsal_224", "CPU rehearsal of paper_224: tiny, from scratch, a few steps",
                   paper["paper_224"].config, **_TINY, train_steps=3, batch_size=4)
    r448 = _preset("rehearsal_448", "CPU rehearsal of paper_448: a few steps from rehearsal_224",
                   paper["paper_448"].config, r224.name, RELATION_INIT, variant="tiny",
                   train_steps=2, batch_size=2)
    r720 = _preset("rehearsal_720", "CPU rehearsal of paper_720: a few steps from rehearsal_448",
                   paper["paper_720"].config, r448.name, RELATION_INIT, variant="tiny",
                   train_steps=2, batch_size=2)
    d224 = _preset("demo_224", "python demo.py, stage 1: tiny at 224 from scratch",
                   paper["paper_224"].config, **_TINY, train_steps=120, batch_size=8,
                   eval_every_steps=60, checkpoint_every_steps=60, log_every_steps=10)
    d448 = _preset("demo_448", "python demo.py, stage 2: tiny at 448 from demo_224",
                   d224.config, d224.name, RELATION_INIT, resolution=448, train_steps=40,
                   eval_every_steps=20, checkpoint_every_steps=20)
    return [r224, r448, r720, d224, d448]


def _registry() -> dict:
    paper = {p.name: p for p in _paper_presets()}
    return {**paper, **{p.name: p for p in _cpu_presets(paper)}}


PRESETS = _registry()


def preset(name: str) -> Preset:
    """The preset called ``name``; ValueError naming the known ones otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_config(name: str, runs_dir: str = "") -> TrainConfig:
    """A preset's TrainConfig, its run folders (``model_dir``, a preset's ``init``) moved from
    runs/ to ``runs_dir`` when one is given (a demo's or an experiment's output folder).

    Args:
      name: a key of ``PRESETS``.
      runs_dir: the folder that holds the runs instead of runs/ ("" keeps runs/).

    Returns:
      The TrainConfig (``data_dir`` still to be set).

    Raises:
      ValueError: an unknown name, naming the known ones.
    """
    c = preset(name).config
    if not runs_dir:
        return c
    prefix = PRESET_RUNS_DIR + "/"

    def move(path: str) -> str:
        return os.path.join(runs_dir, path[len(prefix):]) if path.startswith(prefix) else path

    return dataclasses.replace(c, model_dir=move(c.model_dir), init=move(c.init))


def preset_lineage(names) -> list:
    """``names`` with every preset they start from, each once, parents before children.

    Args:
      names: preset names.

    Returns:
      The names to run, in an order that runs every parent before its children.
    """
    ordered = []

    def visit(name: str) -> None:
        parent = preset(name).parent
        if parent:
            visit(parent)
        if name not in ordered:
            ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def preset_step_offset(name: str, train_steps=None) -> int:
    """Steps trained before a preset's run began, over the stages it was initialised from —
    what the paper's cumulative labels add ("448*@32k" is 12k steps of paper_448 after 20k).

    A continued run counts its steps inside the run it continues, so it adds nothing of its own.

    Args:
      name: a key of ``PRESETS``.
      train_steps: the steps of a preset's run by name, for runs shrunk or lengthened (the
        experiment runner's ``--scale``); None: each preset's own ``train_steps``.
    """
    steps = train_steps or (lambda n: preset(n).config.train_steps)
    p = preset(name)
    if p.relation == RELATION_INIT:
        return preset_step_offset(p.parent, steps) + steps(p.parent)
    if p.relation == RELATION_CONTINUE:
        return preset_step_offset(p.parent, steps)
    return 0


# --------------------------------------------------------------------------------------------
# The paper's experiments: which preset fills each number, and the paper's numbers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PaperResult:
    """One kappa of the paper's Table II or III, and the preset whose run reproduces it.

    Attributes:
      row, column: where it stands in the paper's table ("448×448", "multi-task scores";
        "BaseNet", "val set").
      preset: the run (a key of ``PRESETS``).
      prediction: how the run is read for this number: ``PREDICT_BY_SCORE`` or
        ``PREDICT_BY_PROBABILITIES``.
      split: "validation" or "test".
      kappa: the paper's quadratic kappa.
    """

    row: str
    column: str
    preset: str
    prediction: str
    split: str
    kappa: float


@dataclasses.dataclass(frozen=True)
class Fig4Point:
    """One labelled point of the paper's Fig. 4 ("448*@32k/4.0h"): a step of a preset's run.

    ``step`` counts the run's own steps; the label's count is ``preset_step_offset(preset) +
    step``. ``hours`` is the paper's training time to that point (its GPU, all stages).
    """

    label: str
    preset: str
    step: int
    hours: float


def _table2() -> tuple:
    s, p, val = PREDICT_BY_SCORE, PREDICT_BY_PROBABILITIES, "validation"
    # (resolution, MSE scores, CE prob., multi-task scores, prob., M²CNN scores, prob.)
    paper = ((224, 0.720, 0.725, 0.742, 0.718, None, None),
             (448, 0.790, 0.772, 0.812, 0.782, 0.830, 0.812),
             (720, 0.835, 0.751, 0.841, 0.826, 0.844, 0.842))
    cells = []
    for r, mse, ce, mt_s, mt_p, m2_s, m2_p in paper:
        row, mt = f"{r}×{r}", "paper_224" if r == 224 else f"basenet_mt_{r}"
        cells += [PaperResult(row, "MSE scores", f"basenet_mse_{r}", s, val, mse),
                  PaperResult(row, "CE prob.", f"basenet_ce_{r}", p, val, ce),
                  PaperResult(row, "multi-task scores", mt, s, val, mt_s),
                  PaperResult(row, "multi-task prob.", mt, p, val, mt_p)]
        if m2_s is not None:
            cells += [PaperResult(row, "M²CNN scores", f"paper_{r}", s, val, m2_s),
                      PaperResult(row, "M²CNN prob.", f"paper_{r}", p, val, m2_p)]
    return tuple(cells)


def _table3() -> tuple:
    rows = (("BaseNet", "basenet_mse_720", 0.835, 0.828),
            ("BaseNet+MT", "basenet_mt_720", 0.841, 0.838),
            ("M²CNN", "paper_720", 0.844, 0.841))
    return tuple(PaperResult(row, column, name, PREDICT_BY_SCORE, split, kappa)
                 for row, name, val, test in rows
                 for column, split, kappa in (("val set", "validation", val),
                                              ("test set", "test", test)))


# Table II (validation kappa, "RESULTS OF EACH MODULE"), Table III (our three rows of it) and
# Fig. 4 (validation kappa against steps and hours; its kappas are only drawn, not printed).
PAPER_EXPERIMENTS = {
    "table2": _table2(),
    "table3": _table3(),
    "fig4": (Fig4Point("224@20k", "paper_224", PAPER_STEPS_224, 1.4),
             Fig4Point("224@60k", "fig4_224_60k", FIG4_STEPS_224_LONG, 4.2),
             Fig4Point("448@20k", "fig4_448_direct", PAPER_STEPS_DIRECT, 4.2),
             Fig4Point("448@26k", "fig4_448_direct", FIG4_STEPS_448_DIRECT, 5.5),
             Fig4Point("448*@32k", "paper_448", PAPER_STEPS_448, 4.0),
             Fig4Point("448*@40k", "fig4_448ft_40k", FIG4_STEPS_448_FINETUNE_LONG, 5.5)),
}


def experiment_presets(experiment: str) -> list:
    """The presets an experiment needs (``PAPER_EXPERIMENTS``), parents first.

    Raises:
      ValueError: an unknown experiment, naming the known ones.
    """
    if experiment not in PAPER_EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: "
                         f"{', '.join(PAPER_EXPERIMENTS)}")
    return preset_lineage(dict.fromkeys(e.preset for e in PAPER_EXPERIMENTS[experiment]))


# --- What a run costs on a GPU, estimated (the experiment runner's plan, ``--dry_run``) ---
# The paper reports hours for Fig. 4's runs only, on a GPU it does not name. The runner estimates
# every run's from the network's FLOPs (``model/accounting.py``: conv and dense layers) and an
# assumed device, and prints the estimate labelled as one, beside the paper's hours.
# A training step costs about three forward passes per image: the forward pass and a backward
# pass of about twice its FLOPs (gradients of the activations and of the weights).
TRAINING_FLOPS_PER_FORWARD = 3.0
# The device: a V100-class GPU, whose float32 peak is 15.7 TFLOP/s (NVIDIA's V100 SXM2 figure);
# a convolutional network in float32 sustains only part of a peak. The 40 % is an assumption,
# not a measurement: scale the estimates by your device's measured rate.
ESTIMATE_GPU_PEAK_TFLOPS = 15.7
ESTIMATE_GPU_UTILISATION = 0.4
ESTIMATE_GPU_NAME = "a V100-class GPU"


# --------------------------------------------------------------------------------------------
# Image quality (quality/): the paper has none; every value is our choice, with its reason
# --------------------------------------------------------------------------------------------
# EyeQ's quality scale (Fu et al., MICCAI 2019): the assessor's three classes and the records'
# ``quality`` label.
GOOD, USABLE, REJECT = 0, 1, 2
QUALITY_NAMES = ("Good", "Usable", "Reject")
NUM_QUALITIES = len(QUALITY_NAMES)


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """The measures read from a photograph and the classifier fitted on them."""

    # --- where the measures are taken ---
    # The disc's square (before Eq. 1, ``preprocess.graph``'s ``disc``) is shrunk to this side by
    # an exact mean: every measure is then taken at one scale relative to the disc, whatever
    # the camera (a 1024-px copy and its 4928-px original have discs of ~900 and ~3000 px).
    measure_size: int = 360
    # Radii as fractions of the disc radius. The field is read inside ``field_radius``; the
    # sharpness inside ``sharpness_radius``, away from the aperture's own edge (its step would
    # swamp the retina's gradients, and the circle found can be a few % off, up to ~6 %).
    field_radius: float = 0.9
    sharpness_radius: float = 0.82
    # The rim ring and the frame beyond it, whose contrast says whether the disc stands out
    # of the black frame at all (a photograph taken with almost no light does not).
    rim_ring: tuple[float, float] = (0.78, 0.92)
    frame_radius: float = 1.06
    # The centre and the outer ring compared for a falling-off of light towards the rim; the
    # outer ring is also cut into sectors by angle, for a dark crescent on one side.
    centre_radius: float = 0.5
    outer_ring: tuple[float, float] = (0.55, 0.9)
    num_sectors: int = 8
    # A pixel is under-exposed below this luma (grey levels), over-exposed (washed out) from
    # this one up. Luma, not the brightest channel: a well-lit fundus often saturates its red.
    dark_level: float = 20.0
    saturated_level: float = 235.0
    # Added to grey levels before a ratio or a logarithm, so a black region gives a finite value.
    level_floor: float = 1.0
    # Fewer frame pixels than this (the disc's square lies almost wholly inside the field) and
    # the frame counts as black (0): EyePACS frames are ≤ 2 grey levels a channel.
    min_frame_pixels: int = 50

    # --- the classifier: multinomial logistic regression on the standardised measures ---
    # Inverse L2 strength (scikit-learn's C): a few hundred labelled photographs and ~20
    # correlated measures need a firm prior.
    inverse_l2: float = 0.5
    max_iterations: int = 2000
    # Classes weighed inversely to their counts: EyeQ has ~3 Good photographs for each Usable or
    # Reject one, and an unweighted fit would rarely say Usable.
    balanced_classes: bool = True
    # The operating point: gradable = P(Reject) < threshold, with the threshold chosen on the
    # cross-validated P(Reject) of the labelled photographs so that this share of the Reject
    # photographs is called ungradable (sensitivity to Reject).
    target_reject_sensitivity: float = 0.9
    # Cross-validation: folds (both eyes of a patient in one fold), and its seed.
    folds: int = 5
    seed: int = 0


QUALITY = QualityConfig()
