"""ReFT adaptations through the command line on a tiny llama built from a config (CPU, offline): the sweep blends
by intervention strength (alpha 0 = the base's records bit for bit, alpha 1 = the adaptation applied directly by
``harness eval``), the manifest says so, store entries are not shared with a LoRA run on the same base, pyreft
folders need --allow-pickle and --reft-positions, and ``harness blend`` refuses a ReFT folder (exit 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.rundir import predictions_for, read_predictions, read_summary

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from test_lm_tiny import FAST, _save_model, lm_suites  # noqa: E402,F401  (lm_suites is a fixture)

NO_STORE = [*FAST, "--no-store"]


def _adapter():
    from harness.models.reft import InterventionSpec, ReftAdapter, ReftIntervention

    torch.manual_seed(1)
    specs = [InterventionSpec(0, "block_output", 1, 1), InterventionSpec(1, "block_output", 0, 2)]
    mods = torch.nn.ModuleList()
    for _ in specs:
        m = ReftIntervention("loreft", 32, 4)
        with torch.no_grad():
            m.W.mul_(3)
            m.b.copy_(torch.randn(4))
        mods.append(m)
    return ReftAdapter("loreft", specs, mods, hidden_size=32, num_layers=2, info={"source": "test"})


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """base, its ReFT folder (harness format, base recorded), the same interventions as a pyreft folder, a LoRA
    adapter of the base, and another base of the same shape."""
    from _lm_models import make_adapter
    from harness.models.load import model_fingerprint
    from harness.models.reft_io import save_reft
    from test_reft_io import write_pyreft

    root = tmp_path_factory.mktemp("reft-cli")
    base = _save_model(root / "base", seed=3)
    ad = _adapter()
    reft = save_reft(ad, root / "reft", base_name=str(base), base_fingerprint=model_fingerprint(base),
                     base_model_type="llama")
    write_pyreft(root / "pyreft", ad)
    lora = make_adapter(base, root / "lora", "llama", seed=2)
    other = _save_model(root / "other", seed=5)
    return {"base": base, "reft": reft, "pyreft": root / "pyreft", "lora": lora, "other": other}


def _sweep(models, adapted, suites, out, *extra) -> int:
    return main(["sweep", "--base", str(models["base"]), "--adapted", str(adapted), "--suite", *map(str, suites),
                 "--alphas", "0,0.5,1", "--select", "id-only", "--out", str(out), *extra])


def _outputs(run: Path, point: str, suite: str, split: str = "test") -> dict:
    return predictions_for(read_predictions(run), point, suite, split)[3]


def test_sweep_blends_by_intervention_strength(models, lm_suites, tmp_path):
    suites = [lm_suites[k] for k in ("arc", "boolq", "gsm", "ppl")]
    assert _sweep(models, models["reft"], suites, tmp_path / "sweep", *NO_STORE) == 0
    assert main(["eval", "--model", str(models["base"]), "--suite", *map(str, suites), "--out",
                 str(tmp_path / "base"), *NO_STORE]) == 0
    # the base recorded in reft_config.json is the default --base
    assert main(["eval", "--model", str(models["reft"]), "--suite", *map(str, suites), "--out",
                 str(tmp_path / "adapted"), *NO_STORE]) == 0
    s = read_summary(tmp_path / "sweep")
    assert [p.id for p in s.points] == ["base", "alpha=0.5", "adapted"]
    assert any("intervention strength" in n for n in s.notes)
    for suite, col in (("tiny-arc", "loglik"), ("tiny-boolq", "loglik"), ("tiny-gsm", "output"),
                       ("tiny-ppl", "doc_loglik")):
        base = _outputs(tmp_path / "sweep", "base", suite)[col]
        # alpha = 0 through the sweep path: the plain base's records, bit for bit
        assert np.array_equal(base, _outputs(tmp_path / "base", "model", suite)[col], equal_nan=col != "output")
        # alpha = 1: the adaptation applied directly (harness eval of the ReFT folder)
        adapted = _outputs(tmp_path / "sweep", "adapted", suite)[col]
        assert np.array_equal(adapted, _outputs(tmp_path / "adapted", "model", suite)[col],
                              equal_nan=col != "output")
    arc = [_outputs(tmp_path / "sweep", p, "tiny-arc")["loglik"] for p in ("base", "alpha=0.5", "adapted")]
    assert not np.allclose(arc[0], arc[2], equal_nan=True) and not np.allclose(arc[1], arc[2], equal_nan=True)
    manifest = json.loads((tmp_path / "sweep" / "manifest.json").read_text())
    assert manifest["blend_kind"] == "intervention" and manifest["blend_path"] == "intervention"
    assert manifest["intervention"]["method"] == "loreft" and manifest["intervention"]["rank"] == 4
    assert manifest["models"]["adapted"]["kind"] == "reft"
    eval_manifest = json.loads((tmp_path / "adapted" / "manifest.json").read_text())
    assert eval_manifest["intervention"]["kind"] == "intervention"
    assert main(["report", str(tmp_path / "sweep")]) == 0
    assert "strength of the ReFT intervention" in (tmp_path / "sweep" / "report.md").read_text()


def test_store_entries_are_not_shared_with_a_lora_run(models, lm_suites, tmp_path):
    suite = [lm_suites["arc"]]
    assert _sweep(models, models["lora"], suite, tmp_path / "lora", *FAST) == 0
    assert _sweep(models, models["reft"], suite, tmp_path / "reft", *FAST) == 0
    assert _sweep(models, models["reft"], suite, tmp_path / "again", *FAST) == 0
    lora, reft, again = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("lora", "reft", "again"))
    assert lora["blend_kind"] == "weights" and lora["blend_path"] == "lora-scale" and lora["intervention"] is None
    assert lora["blend_references"] == "none" and reft["blend_references"] is None  # only the factors differ
    assert lora["models"]["adapted"]["fingerprint"] != reft["models"]["adapted"]["fingerprint"]
    # after the LoRA run only the base's records (same model) come from the store: 2 splits x alphas 0.5 and 1
    assert reft["store_computed_splits"] == 4 and again["store_computed_splits"] == 0
    a = _outputs(tmp_path / "reft", "alpha=0.5", "tiny-arc")["loglik"]
    assert np.array_equal(a, _outputs(tmp_path / "again", "alpha=0.5", "tiny-arc")["loglik"], equal_nan=True)
    assert not np.allclose(a, _outputs(tmp_path / "lora", "alpha=0.5", "tiny-arc")["loglik"], equal_nan=True)


def test_pyreft_folder_needs_allow_pickle_and_positions(models, lm_suites, tmp_path, capsys):
    suite = [lm_suites["arc"]]
    assert _sweep(models, models["pyreft"], suite, tmp_path / "a", *NO_STORE) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert _sweep(models, models["pyreft"], suite, tmp_path / "b", *NO_STORE, "--allow-pickle") == 2
    assert "positions" in capsys.readouterr().err
    # pyreft records no base, so eval needs --base
    assert main(["eval", "--model", str(models["pyreft"]), "--suite", str(suite[0]), "--allow-pickle",
                 "--reft-positions", "f1+l1", *NO_STORE]) == 2
    assert "--base" in capsys.readouterr().err
    # pyreft saves no positions: given as trained ("l1": the last prompt token at both layers), the folder gives
    # the records of a harness folder holding the same tensors at l1
    from harness.models.reft_io import load_reft, save_reft

    ad = load_reft(models["reft"])
    ad.specs = [type(s)(s.layer, s.component, 0, 1) for s in ad.specs]
    same = save_reft(ad, tmp_path / "same")
    assert _sweep(models, models["pyreft"], suite, tmp_path / "c", *NO_STORE, "--allow-pickle",
                  "--reft-positions", "l1") == 0
    assert _sweep(models, same, suite, tmp_path / "d", *NO_STORE) == 0
    np.testing.assert_allclose(_outputs(tmp_path / "c", "adapted", "tiny-arc")["loglik"],
                               _outputs(tmp_path / "d", "adapted", "tiny-arc")["loglik"], rtol=0, atol=1e-5)


def test_bad_reft_input_exits_2(models, lm_suites, tmp_path, capsys):
    suite = [str(lm_suites["arc"])]
    rc = main(["blend", "--base", str(models["base"]), "--adapted", str(models["reft"]), "--alpha", "0.5",
               "--out", str(tmp_path / "blend")])
    assert rc == 2 and "intervention strength" in capsys.readouterr().err and not (tmp_path / "blend").exists()
    # recorded base fingerprint differs from --base
    assert main(["sweep", "--base", str(models["other"]), "--adapted", str(models["reft"]), "--suite", *suite,
                 "--select", "id-only", "--out", str(tmp_path / "s"), *NO_STORE]) == 2
    assert "another base model" in capsys.readouterr().err
    # --base applies only to a ReFT folder
    assert main(["eval", "--model", str(models["base"]), "--base", str(models["base"]), "--suite", *suite,
                 *NO_STORE]) == 2
    assert "ReFT folder" in capsys.readouterr().err
    assert main(["sweep", "--base", str(models["base"]), "--adapted", str(models["reft"]), "--suite", *suite,
                 "--select", "id-only", "--packed", "on", *NO_STORE]) == 2
    assert main(["sweep", "--base", str(models["base"]), "--adapted", str(models["reft"]), "--suite", *suite,
                 "--select", "id-only", "--head", "adapted", *NO_STORE]) == 2
    assert "--head adapted does not apply" in capsys.readouterr().err
    assert main(["demo", "--adaptation", "reft", "--no-progress"]) == 2  # the sentiment demo has no ReFT
    assert "--task lm" in capsys.readouterr().err


def test_a_sweep_takes_alpha_0_from_an_earlier_eval_of_the_base_where_it_computes_the_same(models, lm_suites,
                                                                                           tmp_path, monkeypatch):
    """A sweep's alpha 0 shares ``harness eval``'s store entry of the base under a weight lerp (a full fine-tune)
    and an intervention (a ReFT folder), which leave the base's forward exactly; a LoRA's alpha 0 is computed (its
    branch scaled by 0 can be non-finite) and no alpha 1 is shared (the adapted folder's config can differ from
    the base module the sweep runs). Every record a sweep takes from the store equals what the same sweep
    computes with --no-store, bit for bit."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))  # a store of its own: counts below are exact
    suite = [lm_suites["arc"], lm_suites["gsm"]]  # four splits

    def computed(run: str) -> int:
        return json.loads((tmp_path / run / "manifest.json").read_text())["store_computed_splits"]

    for name in ("base", "reft", "other"):
        assert main(["eval", "--model", str(models[name]), "--suite", *map(str, suite), "--out",
                     str(tmp_path / f"eval-{name}"), *FAST]) == 0
    for run, adapted, n in (("lora", "lora", 12), ("reft", "reft", 8), ("full", "other", 8)):
        assert _sweep(models, models[adapted], suite, tmp_path / run, *FAST) == 0
        assert computed(run) == n, run  # 3 alphas x 4 splits, less alpha 0 where it is shared
        assert _sweep(models, models[adapted], suite, tmp_path / f"{run}-own", *NO_STORE) == 0
        for point in ("base", "alpha=0.5", "adapted"):
            for name, col in (("tiny-arc", "loglik"), ("tiny-gsm", "output")):
                for split in ("validation", "test"):
                    ours = _outputs(tmp_path / run, point, name, split)[col]
                    own = _outputs(tmp_path / f"{run}-own", point, name, split)[col]
                    assert np.array_equal(ours, own, equal_nan=col != "output"), (run, point, name, split)
