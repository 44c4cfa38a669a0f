"""The layout holds: import-linter's contracts (setup.cfg) pass, so no stage imports one above it
and no package has an import cycle."""

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_import_contracts_are_kept():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run([lint, str(REPO_ROOT / "setup.cfg"), "--no-cache"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout
