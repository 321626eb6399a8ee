"""The README's promises: its usage snippet runs and prints what it shows; CI runs its test command."""
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_usage_snippet_prints_snn_equals_ann():
    block = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    m = re.search(r"max \|SNN - ANN\| = (\S+)", out.getvalue())
    assert m is not None and float(m.group(1)) <= 1e-6


def test_ci_runs_the_readme_test_command():
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(commands) == 2                              # exactly two commands open the README
    test_command = commands[1].split("&&")[-1].strip()    # python -m pytest -q tests
    assert test_command in (ROOT / ".ci" / "run").read_text()
