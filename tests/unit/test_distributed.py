"""The pieces of a data-parallel run that need no second process: a split's row subsets give the whole split's
records once merged (every task), the torchrun environment is read strictly, each rank's share is disjoint; and
models split by a device map (loaded with one on CPU, offloading refused, classifiers refused)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.errors import ModelError, SpecError
from harness.pipeline.common import load_suites, prepare_splits
from harness.pipeline.distributed import DistGroup, dist_env
from harness.settings import Settings
from harness.tasks import task_for
from harness.tasks.base import merge_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _causal import byte_bpe, tiny_causal  # noqa: E402

WORDS = "water light plants energy rock steam ice sun leaf animals grow mass".split()


def _fake_run(prep) -> dict[str, np.ndarray]:
    """Deterministic outputs of each request (what a runner returns), from the request alone."""
    reqs = prep.requests
    if prep.kind == "classify":
        return {"logits": np.stack([reqs.lengths, -reqs.lengths * 0.5], axis=1).astype(np.float32)}
    if prep.kind == "loglikelihood":
        return {"loglik": np.array([-len(c) - 0.1 * len(x) for c, x in reqs]),
                "is_greedy": np.array([float(len(x) % 2) for _, x in reqs])}
    if prep.kind == "loglikelihood_rolling":
        return {"loglik": np.array([-1.5 * len(t) for t in reqs]), "tokens": np.array([len(t.split()) for t in reqs],
                                                                                       float)}
    return {"output": np.array([p[-(3 + len(p) % 9):] for p in reqs], dtype=str)}


@pytest.fixture(scope="module")
def lm_splits(tmp_path_factory):
    import random

    root = tmp_path_factory.mktemp("subset-suites")
    rng = random.Random(1)
    rows = [{"id": f"q{i}", "question": " ".join(rng.sample(WORDS, 3)), "choices": rng.sample(WORDS, rng.randint(2, 5)),
             "gold": 0, "answer": rng.choice(WORDS), "passage": " ".join(rng.choices(WORDS, k=rng.randint(5, 30)))}
            for i in range(13)]
    (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    head = "kind: suite\nrole: id\nsource: {type: local, files: [rows.jsonl]}\nid_column: id\n"
    split = "splits: [{name: test, role: test}]\n"
    (root / "mc.yaml").write_text(head.replace("kind: suite", "kind: suite\nname: mc") + split +
                                  "task:\n  kind: multiple_choice\n  prompt: {template: \"Q: {{question}}\\nA:\"}\n"
                                  "  choices: {field: choices}\n  gold: {index: gold}\nmetrics: [acc]\n")
    (root / "gen.yaml").write_text(head.replace("kind: suite", "kind: suite\nname: gen") + split +
                                   "task:\n  kind: generation\n  prompt: {template: \"Q: {{question}}\\nA:\"}\n"
                                   "  gold: {text: answer}\n  stop: [\"\\n\"]\n  max_new_tokens: 4\n"
                                   "metrics: [exact_match, f1]\n")
    (root / "ppl.yaml").write_text(head.replace("kind: suite", "kind: suite\nname: ppl") + split +
                                   "task: {kind: perplexity, text: passage, max_length: 16}\n")
    return [root / f"{n}.yaml" for n in ("mc", "gen", "ppl")]


def _check_subsets_merge(paths, tokenizer) -> None:
    loaded = prepare_splits(load_suites(list(paths)), Settings())
    for sd in loaded.splits:
        task = task_for(loaded.suite(sd.ref.suite))
        prep = task.prepare(sd, tokenizer)
        whole = task.records(prep, _fake_run(prep))
        for world in (2, 3, len(prep) + 2):  # more ranks than rows: some ranks get none
            parts = []
            for rank in range(world):
                rows = DistGroup(rank, world, rank, "gloo").shard(len(prep))
                if len(rows):
                    sub = task.subset(prep, rows)
                    assert list(sub.example_ids) == list(prep.example_ids[rows]) and sub.cache_key != prep.cache_key
                    parts.append((rows, task.records(sub, _fake_run(sub))))
            merged = merge_records(len(prep), parts)
            assert set(merged) == set(whole)
            for k, v in whole.items():
                assert merged[k].dtype == v.dtype, (sd.ref.key, k)
                np.testing.assert_array_equal(merged[k], v, err_msg=f"{sd.ref.key} {k} world={world}")


def test_lm_subsets_merge_to_the_whole_split(lm_splits):
    _check_subsets_merge(lm_splits, byte_bpe("llama"))


def test_classification_subsets_merge_to_the_whole_split(tiny_suites, tiny_pair):
    from transformers import AutoTokenizer

    _check_subsets_merge(tiny_suites[:2], AutoTokenizer.from_pretrained(str(tiny_pair[0])))


def test_merge_refuses_rows_missing_or_repeated():
    cols = {"x": np.arange(2.0)}
    with pytest.raises(ValueError, match="cover"):
        merge_records(4, [(np.array([0, 1]), cols)])
    with pytest.raises(ValueError, match="cover"):
        merge_records(3, [(np.array([0, 1]), cols), (np.array([1]), {"x": np.zeros(1)})])
    with pytest.raises(ValueError, match="columns"):
        merge_records(3, [(np.array([0, 1]), cols), (np.array([2]), {"y": np.zeros(1)})])


def test_the_ranks_share_every_row_once():
    for n in (0, 1, 7, 100):
        rows = np.concatenate([DistGroup(r, 3, r, "gloo").shard(n) for r in range(3)])
        assert sorted(rows.tolist()) == list(range(n))


def test_dealt_batches_are_rebuilt_whole_by_each_rank():
    """A rank given whole batches of the length-sorted plan forms exactly those batches again (so a classifier's
    logits are those of one process, bit for bit)."""
    from harness.predict import make_batches

    lengths = np.random.default_rng(0).integers(1, 60, size=157)
    for budget in (64, 300, 5000):
        plan = make_batches(lengths, budget)
        for world in (2, 3):
            for rank in range(world):
                rows = DistGroup(rank, world, rank, "gloo").deal(plan)
                rebuilt = [rows[b] for b in make_batches(lengths[rows], budget)]
                assert [b.tolist() for b in rebuilt] == [b.tolist() for b in plan[rank::world]]


@pytest.mark.parametrize("env,expected", [({}, None), ({"WORLD_SIZE": "1", "RANK": "0"}, None),
                                          ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}, (3, 4, 1)),
                                          ({"WORLD_SIZE": "2", "RANK": "1"}, (1, 2, 1))])
def test_dist_env_reads_torchrun_variables(monkeypatch, env, expected):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert dist_env() == expected


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2", "RANK": "x"}, {"WORLD_SIZE": "2", "RANK": "2"},
                                 {"WORLD_SIZE": "2"}])
def test_a_malformed_distributed_env_is_exit_2(monkeypatch, env, capsys):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SpecError, match="RANK"):
        dist_env()
    assert main(["validate", "nowhere.yaml"]) == 2
    assert "torchrun" in capsys.readouterr().err


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dm") / "lm"
    tok = byte_bpe("llama")
    tiny_causal("llama", tok, seed=5).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_device_map_loads_and_scores_like_one_device(lm_dir):
    from harness.models.causal import CausalLMScorer
    from harness.models.causal_load import load_causal_lm
    from harness.models.placement import memory_by_device

    plain = load_causal_lm(lm_dir, device="cpu")
    mapped = load_causal_lm(lm_dir, device_map="auto")
    reqs = [("Question: water", " light"), ("Question: rock", " steam ice"), ("", "sun")]
    a = CausalLMScorer(plain.model, plain.tokenizer).loglikelihood(reqs).loglik
    b = CausalLMScorer(mapped.model, mapped.tokenizer).loglikelihood(reqs).loglik
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert mapped.device.type == "cpu" and "device_map" in mapped.info
    mem = memory_by_device(mapped.model)
    assert mem["cpu"]["weights_gib"] > 0
    with pytest.raises(ModelError, match="unknown device map"):
        load_causal_lm(lm_dir, device_map="everywhere")


def test_an_offloading_device_map_is_refused():
    from harness.models.placement import check_placement

    model = torch.nn.Linear(2, 2)
    model.hf_device_map = {"a": 0, "b": "cpu"}
    with pytest.raises(ModelError, match="offloaded"):
        check_placement(model, "m")
    model.hf_device_map = {"a": "cpu", "b": "cpu"}
    assert check_placement(model, "m") == {"a": "cpu", "b": "cpu"}
    meta = torch.nn.Linear(2, 2, device="meta")
    with pytest.raises(ModelError, match="meta"):
        check_placement(meta, "m")


def test_device_map_on_a_classifier_is_exit_2(tiny_pair, tiny_suites, tmp_path, capsys):
    rc = main(["eval", "--model", str(tiny_pair[0]), "--suite", str(tiny_suites[0]), "--device-map", "auto",
               "--no-report", "--no-progress", "--n-resamples", "10"])
    assert rc == 2
    assert "language models only" in capsys.readouterr().err
