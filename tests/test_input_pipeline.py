"""The tf.data input pipeline over a built dataset."""

import dataclasses
import resource

import cv2
import numpy as np
import pytest
import tensorflow as tf

from m2cnn_tf.util import memory
from m2cnn_tf.data import builder, input_pipeline, records, sources
from m2cnn_tf.config import PREPROCESS, BuilderConfig

RESOLUTIONS = (224, 448)


@pytest.fixture(scope="module", autouse=True)
def image_process():
    """The scripts that read images configure their process first (one OpenCV thread, freed
    image memory kept); so does this test module, as train.py does."""
    assert memory.configure_process_for_image_work()  # glibc, as on every Linux CI machine


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline") / "data"
    inputs, skipped = sources.synthetic_inputs(30, seed=5, width=640)
    builder.build(inputs, skipped, str(out), BuilderConfig(
        resolutions=RESOLUTIONS, examples_per_shard=7, val_fraction=0.3, num_workers=1),
        {"kind": "synthetic"}, quiet=True)
    return str(out)


def _take(dataset, batches):
    iterator = iter(dataset)
    out = [next(iterator) for _ in range(batches)]
    del iterator  # never leave a live iterator with numpy_function work for interpreter exit
    return out


def test_training_batches_have_the_documented_structure(data_dir):
    dataset = input_pipeline.make_dataset(data_dir, "train", 448, batch_size=4, training=True,
                                          seed=1)
    for batch in _take(dataset, 3):
        assert batch["image"].shape == (4, 448, 448, 3) and batch["image"].dtype == tf.uint8
        assert batch["grade"].dtype == tf.int32 and batch["grade"].shape == (4,)
        assert set(batch) == {"image", "grade", "image_id", "patient_id", *records.EXTRA_LABELS}
        for name in records.EXTRA_LABELS:  # no source label here: every record reads -1
            assert batch[name].dtype == tf.int32
            assert set(batch[name].numpy()) == {records.UNLABELLED}
        assert all(0 <= int(g) <= 4 for g in batch["grade"])


def test_evaluation_reads_every_image_once_unaugmented(data_dir):
    dataset = input_pipeline.make_dataset(data_dir, "validation", 224, batch_size=4,
                                          training=False)
    stored = {}
    for shard in builder.read_manifest(data_dir)["splits"]["validation"]["resolutions"]["224"][
            "shards"]:
        for raw in tf.data.TFRecordDataset(f"{data_dir}/{shard}"):
            example = records.parse_example_numpy(raw.numpy())
            stored[example[records.IMAGE_ID].decode()] = tf.io.decode_jpeg(
                example[records.IMAGE_ENCODED]).numpy()
    seen = []
    for batch in dataset:
        for image, image_id in zip(batch["image"].numpy(), batch["image_id"].numpy()):
            np.testing.assert_array_equal(image, stored[image_id.decode()])
            seen.append(image_id.decode())
    assert sorted(seen) == sorted(stored)
    assert len(seen) == input_pipeline.split_size(data_dir, "validation")


def test_deterministic_runs_repeat_exactly_and_seeds_differ(data_dir):
    def run(seed):
        dataset = input_pipeline.make_dataset(data_dir, "train", 224, batch_size=4,
                                              training=True, seed=seed, deterministic=True)
        return [(b["image"].numpy(), b["image_id"].numpy()) for b in _take(dataset, 3)]

    first, again, other = run(7), run(7), run(8)
    for (a_img, a_ids), (b_img, b_ids) in zip(first, again):
        np.testing.assert_array_equal(a_ids, b_ids)
        np.testing.assert_array_equal(a_img, b_img)
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(first, other))


def test_class_balanced_sampling_evens_out_the_grades(tmp_path):
    inputs, _ = sources.synthetic_inputs(40, seed=1, width=400)
    # make grade 0 dominant, as in EyePACS
    inputs = [dataclasses.replace(r, grade=0 if i % 5 else r.grade) for i, r in enumerate(inputs)]
    out = str(tmp_path / "skewed")
    builder.build(inputs, [], out, BuilderConfig(resolutions=(224,), num_workers=1,
                                                 val_fraction=0.0),
                  {"kind": "synthetic"}, quiet=True)
    natural = np.asarray(input_pipeline.grade_counts(out, "train"), float)
    assert natural[0] / natural.sum() > 0.7
    dataset = input_pipeline.make_dataset(out, "train", 224, batch_size=50, training=True,
                                          seed=3, class_balanced=True, augment=False)
    grades = np.concatenate([b["grade"].numpy() for b in _take(dataset, 6)])
    present = natural > 0
    share = np.bincount(grades, minlength=5)[present] / grades.size
    assert np.all(np.abs(share - 1 / present.sum()) < 0.1), share


def _disc_image(size=224):
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), int(PREPROCESS.gamma), np.uint8)
    inside = np.hypot(*np.mgrid[:size, :size] - (size - 1) / 2) < 0.45 * size
    image[inside] = rng.integers(0, 256, (inside.sum(), 3))
    return image, inside


def test_augmentation_is_seeded_and_keeps_gamma_outside_the_disc():
    image, inside = _disc_image()
    config = dataclasses.replace(input_pipeline.AUGMENT, brightness=0.0)
    a = input_pipeline.augment_image(image, 11, config)
    np.testing.assert_array_equal(a, input_pipeline.augment_image(image, 11, config))
    assert not np.array_equal(a, input_pipeline.augment_image(image, 12, config))
    # a zoom of at most 5 % keeps everything beyond 0.5 × size at γ (contrast pivots on γ)
    far = np.hypot(*np.mgrid[:224, :224] - 223 / 2) > 0.5 * 224
    assert (a[far] == PREPROCESS.gamma).all()


def test_four_channel_warp_equals_the_plain_three_channel_warp():
    """The RGBA detour (for OpenCV's faster path) changes no pixel of the augmentation."""
    image, _ = _disc_image(720)
    config = input_pipeline.AUGMENT
    for seed in range(6):
        rng = np.random.default_rng(seed)  # the draws augment_image makes, in its order
        angle, scale = rng.uniform(0.0, 360.0), rng.uniform(1 - config.zoom, 1 + config.zoom)
        flip = rng.random() < 0.5
        brightness = rng.uniform(-config.brightness, config.brightness)
        contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
        matrix = cv2.getRotationMatrix2D((359.5, 359.5), angle, scale)
        if flip:
            matrix[0] = -matrix[0]
            matrix[0, 2] += 719
        plain = cv2.warpAffine(image, matrix, (720, 720), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(config.fill,) * 3)
        plain = cv2.addWeighted(plain, contrast, plain, 0.0,
                                (1 - contrast) * config.fill + brightness)
        np.testing.assert_array_equal(input_pipeline.augment_image(image, seed, config), plain)


def test_brightness_and_contrast_saturate_at_black():
    """A black pixel pushed below 0 stays 0 (it does not reflect back to a grey level)."""
    image, inside = _disc_image()
    image[inside] = 0
    config = dataclasses.replace(input_pipeline.AUGMENT, rotate=False, flip=False, zoom=0.0)
    centre = np.hypot(*np.mgrid[:224, :224] - 223 / 2) < 0.3 * 224
    offsets = []
    for seed in range(12):
        rng = np.random.default_rng(seed)  # the draws augment_image makes, in its order
        rng.uniform(1, 1)  # the zoom (no angle or flip is drawn when they are off)
        brightness = rng.uniform(-config.brightness, config.brightness)
        contrast = rng.uniform(1 - config.contrast, 1 + config.contrast)
        offset = (1 - contrast) * config.fill + brightness  # what a black pixel becomes
        offsets.append(offset)
        out = input_pipeline.augment_image(image, seed, config)
        assert (out[centre] == np.clip(np.rint(offset), 0, 255)).all(), (seed, offset)
    assert min(offsets) < -1 and max(offsets) > 1  # both cases were met


def test_flip_is_an_exact_mirror():
    image, _ = _disc_image()
    config = input_pipeline.AugmentConfig(rotate=False, flip=True, zoom=0.0, brightness=0.0,
                                          contrast=0.0)
    outputs = [input_pipeline.augment_image(image, s, config) for s in range(8)]
    mirrored = [o for o in outputs if np.array_equal(o, image[:, ::-1])]
    unchanged = [o for o in outputs if np.array_equal(o, image)]
    assert mirrored and unchanged and len(mirrored) + len(unchanged) == 8


def test_missing_split_resolution_or_folder_says_what_exists(data_dir, tmp_path):
    with pytest.raises(ValueError, match="no 'test' split; it has: train, validation"):
        input_pipeline.make_dataset(data_dir, "test", 224, 4, training=False)
    with pytest.raises(ValueError, match="no 720 px images; it has: 224, 448"):
        input_pipeline.make_dataset(data_dir, "train", 720, 4, training=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        input_pipeline.make_dataset(str(tmp_path / "nowhere"), "train", 224, 4, training=False)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / builder.STATE_DIR).mkdir()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        input_pipeline.make_dataset(str(tmp_path / "half"), "train", 224, 4, training=False)


def test_augmenting_does_not_page_fault_its_images_in_again(data_dir):
    """Freed image buffers stay in the heap (keep_freed_memory): counted page faults per
    augmented 448 px image stay far below one image's pages (≈ 150). With glibc's defaults some
    runs return them to the kernel and fault ≈ 5 images' worth in again per image — not every
    run, so this bounds the count rather than comparing; bench/input_pipeline.py shows the
    effect (a count, not a time)."""
    assert memory.keep_freed_memory()  # glibc, as on every Linux CI machine
    dataset = input_pipeline.make_dataset(data_dir, "train", 448, batch_size=8, training=True,
                                          seed=4)
    iterator = iter(dataset)
    for _ in range(3):
        next(iterator)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    batches = 10
    for _ in range(batches):
        next(iterator)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del iterator
    image_pages = 448 * 448 * 3 / resource.getpagesize()
    assert faults / (batches * 8) < image_pages / 2, f"{faults / (batches * 8):.0f} faults/image"


def test_making_a_dataset_changes_no_process_wide_setting(data_dir):
    """OpenCV's thread count (and malloc) are the entry points' business, not the pipeline's."""
    cv2.setNumThreads(2)
    try:
        _take(input_pipeline.make_dataset(data_dir, "train", 224, batch_size=2, training=True,
                                          seed=3), 1)
        assert cv2.getNumThreads() == 2
    finally:
        memory.configure_process_for_image_work()
