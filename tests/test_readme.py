"""The README's quick start is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands():
    quick = ROOT.joinpath("README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", quick, flags=re.DOTALL)


def test_quick_start_has_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("ecgfast demo")


def test_ci_runs_the_readme_test_command():
    """.ci/run lints with the ruff the test extra pins, then runs the README's test command,
    then the inference install's step."""
    test_command = _readme_commands()[1].strip()
    ci_lines = [line for line in ROOT.joinpath(".ci/run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    (pin,) = re.findall(r'"(ruff==[^"]+)"', ROOT.joinpath("pyproject.toml").read_text())
    assert ci_lines == [f'pip install --quiet "{pin}" && ruff check .', test_command,
                        "bash .ci/inference"]


def test_ci_installs_the_readme_serving_command():
    """The inference step installs what the README's "Serving" paragraph says (plus the
    test extra) and runs the inference tests there."""
    serving = ROOT.joinpath("README.md").read_text().split("## Serving", 1)[1].split("\n## ", 1)[0]
    (command,) = re.findall(r"```bash\n(.*?)\n```", serving, flags=re.DOTALL)
    assert command == "pip install ./serving"
    ci = ROOT.joinpath(".ci/inference").read_text()
    assert 'pip" install --quiet "./serving[test]"' in ci
    assert 'pytest" -m inference' in ci
