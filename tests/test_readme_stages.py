"""README's CPU rehearsal block (build on synthetic photographs, the three staged presets) runs
as printed."""

import json
import shlex

from conftest import REPO_ROOT
from readme_commands import is_cpu_stages, readme_blocks, run


def test_the_cpu_stages_run_as_printed(tmp_path):
    block = next(b for b in readme_blocks() if is_cpu_stages(b))
    assert [c.split()[1] for c in block] == ["build_tfrecords.py"] + ["train.py"] * 3
    for command in block:
        argv = shlex.split(command)[1:]
        argv[0] = str(REPO_ROOT / argv[0])
        run(argv + (["--quiet"] if "--quiet" not in argv else []), cwd=tmp_path)
    for resolution, new in ((448, ["medial_cells"]), (720, ["large_cells"])):
        report = json.loads((tmp_path / "runs" / f"rehearsal_{resolution}" / "init_report.json")
                            .read_text())
        assert sorted(b for b, v in report["new"].items() if v) == new, report["new"]
