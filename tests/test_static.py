"""Static checks that catch, in seconds, what would otherwise fail only at run time."""
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def test_no_undefined_names_or_unused_imports():
    """A name used but never defined is a NameError waiting on the one path that reaches it."""
    run = subprocess.run([sys.executable, "-m", "pyflakes", "bids_sclesion", "tests", "scripts", "benchmarks"],
                         cwd=ROOT, capture_output=True, text=True)
    # Fixtures imported into a test module look unused to pyflakes; they are used by pytest by name.
    problems = [line for line in run.stdout.splitlines()
                if not ("tests/" in line and ("imported but unused" in line or "redefinition of unused" in line))]
    assert not problems, "\n".join(problems)
