"""The documented examples run as shown: the README's plain-PyTorch loop and the runnable docstring examples."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

# modules whose every ``Example:`` is a complete snippet (the others name a trainer or writer they assume)
DOCTESTED = ("monai_danil.handlers.distractor_mining", "monai_danil.handlers.utils", "monai_danil.data.atomic",
             "monai_danil.metrics")


def test_plain_pytorch_loop_example_runs():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "examples" / "plain_pytorch_loop.py")],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = re.findall(r"epoch (\d): loss ([\d.]+) \(ce ([\d.]+), distractor ([\d.]+)\), bank (\d+) samples", result.stdout)
    assert [line[0] for line in lines] == ["1", "2"]
    for _, loss, ce, da, bank in lines:
        assert float(loss) >= float(ce) > 0 and float(da) >= 0 and int(bank) == 64


def test_readme_snippet_matches_the_example():
    readme = (REPO_ROOT / "README.md").read_text()
    example = (REPO_ROOT / "examples" / "plain_pytorch_loop.py").read_text()
    for call in ("tap = NeuronTap(net).attach()", "features = tap.pop()",
                 "miner.mine(features, logits, labels, classifier_weight=tap.classifier_weight, ids=ids)",
                 "miner.update(features, labels, ids)"):
        assert call in readme and call in example


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
