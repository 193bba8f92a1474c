"""The README opens with the two set-up commands, and CI runs the second one verbatim."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_two_commands_and_ci_uses_the_test_one():
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if ln.strip()]
    assert lines[0].startswith("# ")
    assert lines[1] == "```"
    install, test, close = lines[2], lines[3], lines[4]
    assert close == "```"
    assert install.startswith("pip install -c constraints.txt") and "lpm " in install
    assert test.startswith("pip install -c constraints.txt") and "pytest" in test
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -m1 -E '^pip install .*pytest' README.md" in ci
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()
