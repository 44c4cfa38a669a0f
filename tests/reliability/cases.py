"""Every fault the reliability suite tries: case id → (component, fault, expected outcome).

The suite records what it observed for each id (the ``reliability`` fixture); RELIABILITY.md is
written from those records, and ``test_report.py`` fails when the committed RELIABILITY.md does
not list exactly these ids.
"""

from .hostile import HOSTILE_FILES

_EXPECTED_FILE = {
    "graded": "processed: a fundus found and graded 0–4",
    "no_fundus": "a per-file 'no fundus' outcome (error row / fundus_found=False), batch goes on",
    "error": "a per-file error naming the problem, batch goes on",
}
_FAULT_FILE = {
    "zero_bytes": "zero-byte file", "text_named_jpg": "text file named .jpg",
    "truncated_jpeg": "JPEG cut at 2/3 of its bytes",
    "corrupt_huffman": "JPEG whose Huffman table claims >256 codes",
    "cmyk_jpeg": "CMYK (Adobe, 4-component) JPEG", "png_16bit": "16-bit RGB PNG",
    "png_alpha": "RGBA PNG with a varying alpha", "one_pixel": "1×1 PNG",
    "bomb_png": "PNG header claiming 60000×60000 (deflate bomb)",
    "bomb_jpeg": "JPEG header claiming 60000×60000",
    "all_black": "all-black frame", "all_white": "all-white frame",
    "landscape": "natural photograph (sky, sun, hills), not a fundus",
}
FILE_COMPONENTS = {
    "builder": "build_tfrecords.py (subprocess)",
    "predict": "predict.py --model=<export> (subprocess)",
    "predictor": "predictor API, --model=<run> (Python preprocessing)",
    "serving": "serving_default of the export (one request per file)",
}

CASES = {}
for _name, (_file, _, _kind, _text) in HOSTILE_FILES.items():
    for _component, _label in FILE_COMPONENTS.items():
        CASES[f"file.{_name}.{_component}"] = (_label, _FAULT_FILE[_name], _EXPECTED_FILE[_kind])

CASES.update({
    "file.non_utf8_name.predict": (FILE_COMPONENTS["predict"],
                                   "fundus JPEG named b'\\xff\\xfe_fundus.jpg' (not UTF-8)",
                                   "graded; the row names the file"),
    "file.mixed_batch.serving": (FILE_COMPONENTS["serving"].replace("one request per file",
                                                                    "one request"),
                                 "one hostile file among good ones in one request",
                                 "the request fails naming the problem (documented); "
                                 "predict.py then grades the rest one by one"),
    "memory.bomb.worker": ("build worker (subprocess, 2 GB address-space limit)",
                           "decompression bombs (PNG and JPEG headers 60000×60000)",
                           "refused before decoding; peak RSS stays near the baseline"),
    "memory.bomb.serving": ("serving_default", "decompression bombs",
                            "InvalidArgumentError naming max_image_pixels; peak RSS grows < 64 MB"),
    "memory.bomb.predictor": ("predictor API, --model=<run>", "decompression bombs",
                              "per-file error naming max_image_pixels; peak RSS grows < 64 MB"),
    # labels and paths
    "labels.missing_columns": ("sources (kaggle, csv)", "CSV without the image/level columns",
                               "SourceError naming the missing and the present columns"),
    "labels.non_utf8_csv": ("sources", "labels CSV in Latin-1 (not UTF-8)",
                            "SourceError naming the file and the byte offset"),
    "labels.bad_grades": ("sources → builder", "grades '2.0', 'two', '', '7', '-1'",
                          "each row skipped with its reason in errors.csv; others built"),
    "labels.duplicate_ids": ("sources → builder", "the same id on two rows",
                             "second row skipped naming the first; first built once"),
    "labels.bom_crlf": ("sources → builder", "UTF-8 BOM and CRLF line endings",
                        "read as a plain CSV; every row built"),
    "paths.escape_images_dir": ("sources (csv)", "'../outside.jpg', an absolute path, a symlink "
                                "out of --images_dir",
                                "each refused, named in errors.csv"),
    "paths.non_utf8_names": ("sources (folders, kaggle) → builder",
                             "photographs whose file names are not UTF-8",
                             "skipped with 'not valid UTF-8; rename', the rest built"),
    # interruptions
    "interrupt.build.sigkill_records": ("build_tfrecords.py", "SIGKILL after the k-th record "
                                        "(3 different k, drawn with seed 0), then the same "
                                        "command",
                                        "byte-identical output to an uninterrupted build"),
    "interrupt.build.sigkill_shards": ("build_tfrecords.py", "SIGKILL after the k-th shard "
                                       "(2 different k, drawn with seed 1), then the same "
                                       "command",
                                       "byte-identical output to an uninterrupted build"),
    "interrupt.build.enospc": ("builder", "OSError(ENOSPC) at the n-th write (3 different n, "
                               "drawn with seed 2)", "BuildError naming the file and 'No space left'; "
                               "completed shards intact; a re-run finishes identically"),
    "interrupt.build.worker_dies": ("build_tfrecords.py --num_workers=2", "every worker "
                                    "process SIGKILLed at its k-th photograph (2 different k, "
                                    "drawn with seed 3) — a decoder crash or the OOM killer",
                                    "no hang; photographs in flight re-run alone; output "
                                    "byte-identical to an undisturbed build"),
    "interrupt.build.worker_dies_always": ("build_tfrecords.py --num_workers=2", "every worker "
                                           "process SIGKILLed at its first photograph (each "
                                           "photograph kills its retry too)",
                                           "no hang; each photograph an errors.csv row saying "
                                           "its worker died; the build fails clearly"),
    "interrupt.train.sigkill_in_checkpoint": ("train.py", "SIGKILL while ckpt-3 is being "
                                              "written (files cut at a seeded byte count)",
                                              "re-run resumes from ckpt-2; no checkpoint "
                                              "recorded is corrupt; cut files removed"),
    "interrupt.train.sigkill_first_checkpoint": ("train.py", "SIGKILL while ckpt-0 is being "
                                                 "written (seeds 0, 1; whole or cut files)",
                                                 "re-run starts afresh and trains; no "
                                                 "corrupt checkpoint"),
    "interrupt.train.enospc": ("training loop", "OSError(ENOSPC) while ckpt-2 is being written",
                               "TrainingError naming ckpt-2 and the intact ckpt-1; partial "
                               "files removed; earlier checkpoints restore"),
    "interrupt.train.enospc_metrics": ("training loop", "OSError(ENOSPC) appending the 2nd "
                                       "line of metrics.jsonl",
                                       "TrainingError naming metrics.jsonl and the intact last "
                                       "checkpoint; only whole lines kept; the same command "
                                       "resumes"),
    "interrupt.train.enospc_tensorboard": ("training loop", "OSError(ENOSPC) writing the first "
                                           "TensorBoard scalars",
                                           "TrainingError naming the TensorBoard folder and the "
                                           "intact last checkpoint; the same command resumes"),
    "interrupt.train.sigkill_mid_metrics_line": ("train.py", "SIGKILL with metrics.jsonl's first "
                                                 "line cut at a seeded byte (seeds 0, 1)",
                                                 "the cut line is skipped when read and dropped "
                                                 "by the re-run; every later line whole"),
    "interrupt.train.best_json_stale": ("checkpoints", "kill between saving best/ckpt-N and "
                                        "writing best/best.json (left as the old step's)",
                                        "the best record is rebuilt from metrics.jsonl for "
                                        "step N"),
    # concurrency
    "lock.two_builders": ("build_tfrecords.py", "a second builder while the first (stopped at "
                          "record 2) holds the folder",
                          "LockedError naming the holder's pid and host"),
    "lock.build_stale_after_sigkill": ("build_tfrecords.py", "the holder SIGKILLed, then the "
                                       "same command", "stale lock cleared (said so); the build "
                                       "finishes identical to an uninterrupted one"),
    "lock.two_trainings": ("train.py", "a second training on the same --model_dir while the "
                           "first (stopped after ckpt-1) holds it",
                           "LockedError naming the holder's pid"),
    "lock.train_stale_after_sigkill": ("train.py", "the holder SIGKILLed, then the same command",
                                       "stale lock cleared (said so); resumes"),
    # numerics
    "numerics.nan_batch": ("training loop", "a NaN pixel in the batch of step k (k = 3, 1)",
                           "NonFiniteLossError naming step k; the last good checkpoint "
                           "(step k−1) intact and unchanged"),
    "numerics.one_grade_validation": ("metrics / evaluation", "a validation split of one grade",
                                      "kappa defined (0.0, documented), finite, no division "
                                      "by zero"),
})
