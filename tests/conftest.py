"""Shared fixtures: where the real photographs live, and skipping only when they are absent."""

import csv
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("M2CNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
EYEPACS_1024 = SHARED_DATA / "eyepacs_1024"
EYEPACS_FULLRES = SHARED_DATA / "eyepacs_fullres"


def _require(folder: pathlib.Path) -> pathlib.Path:
    if not folder.is_dir():
        pytest.skip(f"real photographs not available: {folder} is absent")
    return folder


def read_labels(folder: pathlib.Path) -> dict:
    with open(folder / "trainLabels.csv", newline="") as f:
        return {row["image"]: int(row["level"]) for row in csv.DictReader(f)}


@pytest.fixture(scope="session")
def eyepacs_1024() -> pathlib.Path:
    return _require(EYEPACS_1024)


@pytest.fixture(scope="session")
def eyepacs_fullres() -> pathlib.Path:
    return _require(EYEPACS_FULLRES)
