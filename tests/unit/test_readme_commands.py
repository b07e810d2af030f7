"""The README's shell commands, read as a new user reads them: a command that trains several models for one
sweep uses one training profile throughout, and every sweep or eval keeps its run directory (``--out``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def bash_blocks(text: str) -> list[list[str]]:
    """The commands of each ```bash block: continuation lines joined, comments dropped."""
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", body)
        blocks.append([line.split("#", 1)[0].strip() for line in joined.splitlines()
                       if line.split("#", 1)[0].strip()])
    return blocks


def harness_commands(block: list[str], sub: str) -> list[list[str]]:
    out = []
    for line in block:
        try:
            words = shlex.split(line)
        except ValueError:
            continue
        if words[:2] == ["harness", sub]:
            out.append(words)
    return out


def flag(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def test_bash_blocks_are_found():
    blocks = bash_blocks(README.read_text(encoding="utf-8"))
    assert any(harness_commands(b, "train") for b in blocks) and any(harness_commands(b, "sweep") for b in blocks)


def test_training_commands_of_one_training_file_in_a_block_share_one_profile():
    for block in bash_blocks(README.read_text(encoding="utf-8")):
        by_file: dict[str, set] = {}
        for words in harness_commands(block, "train"):
            if "--suite" in words:  # the usage summary lists commands without a story
                by_file.setdefault(flag(words, "-c"), set()).add(flag(words, "--profile"))
        for cfg, profiles in by_file.items():
            assert len(profiles) == 1, f"{cfg}: the README's train commands mix profiles {profiles}"


def test_every_readme_sweep_and_eval_keeps_its_run_directory():
    missing = [" ".join(w) for b in bash_blocks(README.read_text(encoding="utf-8"))
               for sub in ("sweep", "eval") for w in harness_commands(b, sub)
               if "--out" not in w and "-c" not in w and "--help" not in w]
    assert not missing, missing
