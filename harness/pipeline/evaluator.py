"""The sweep's evaluator: base and adapted loaded once, one blend engine, ``evaluate(alpha)`` -> a point result.

The evaluator owns the live model and the blend engine; everything it returns is an immutable
:class:`~harness.records.PointResult`. Selection, the adaptive search and the output ensembles are pure functions
over those results (:mod:`harness.sweep`), so nothing here knows how alpha is chosen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import BlendError, ModelError, format_error
from harness.pipeline.common import LoadedSuites, RunOptions, Scoring, classes_of, stage_timer
from harness.pipeline.notes import identical_note, intervention_note, training_length_notes
from harness.pipeline.runners import load_live, make_runner, make_scorer, unpacked
from harness.progress import StepProgress
from harness.records import PointResult, PointRole, point_id
from harness.store import blend_fingerprint
from harness.sweep import SelectionPolicy
from harness.tokcache import tokenizer_fingerprint

__all__ = ["SweepRequest", "BlendEvaluator", "point_of", "reference_device"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepRequest:
    """Everything one sweep is asked to do, fixed before any model is loaded.

    ``alphas`` is a tuple of canonical alphas or ``"adaptive"`` (:func:`harness.sweep.parse_alphas`); ``head`` is
    ``shared`` (blend heads too) or ``adapted`` (keep the adapted head at every alpha); ``budget`` bounds the
    adaptive search; ``gate``/``baseline``/``junit`` configure the optional gate; ``out`` is the run directory.
    """

    base: str | Path
    adapted: str | Path
    suites: tuple
    alphas: tuple[float, ...] | str
    policy: SelectionPolicy
    head: str = "shared"
    options: RunOptions = field(default_factory=RunOptions)
    budget: int = 6
    gate: str | Path | None = None
    baseline: str | Path | None = None
    junit: str | Path | None = None
    out: str | Path | None = None
    command: str = "sweep"
    profile: str | None = None
    notes: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()
    started: float = field(default_factory=time.time)  # time.time() at the API call (the run's wall time)


def point_of(alpha: float, head: str) -> tuple[str, PointRole, str]:
    """(point id, role, label) of a blend alpha under a head mode."""
    if head == "shared" and alpha == 0.0:
        return "base", PointRole.BASE, ""
    if alpha == 1.0:
        return "adapted", PointRole.ADAPTED, ""
    label = "base backbone + adapted head" if (head == "adapted" and alpha == 0.0) else ""
    return point_id(PointRole.BLEND, alpha), PointRole.BLEND, label


def _columns_by_name(names: list[str], classes: list[str]) -> np.ndarray | None:
    """Columns of a reference base whose real label names are the classes in another order (else None)."""
    lower = [n.lower() for n in names]
    if sorted(lower) != sorted(c.lower() for c in classes):
        return None
    return np.array([lower.index(c.lower()) for c in classes], dtype=np.int64)


SMALL_MODEL_BYTES = 1 << 30  # below this, --blend-references auto keeps the references beside a GPU model


def reference_device(setting: str, device_type: str, weight_bytes: int) -> str | None:
    """Where a merged blend keeps its base and adapted copies (``--blend-references``), as the
    ``reference_device`` of :class:`~harness.models.blend.BlendEngine`: ``None`` beside the live model, ``"cpu"``
    in CPU memory.

    ``auto``: beside the model on a CPU, and on an accelerator for a model under 1 GiB of weights (the copies cost
    little there, and streaming them over the bus would cost more than a small model's scoring: an encoder sweep
    on an H200 blends in 1 ms per alpha beside the model); in pinned CPU memory for a model of 1 GiB or more on an
    accelerator (issue 15: the GPU then holds one model copy instead of three; each alpha change streams 2 x the
    weight bytes, 92 ms for a 1.1B bf16 llama on an H200).

    >>> reference_device("auto", "cuda", 2 << 30), reference_device("auto", "cuda", 1 << 20)
    ('cpu', None)
    >>> reference_device("auto", "cpu", 2 << 30), reference_device("device", "cuda", 2 << 30)
    (None, None)
    """
    if setting == "cpu":
        return "cpu"
    if setting == "device" or device_type == "cpu" or weight_bytes < SMALL_MODEL_BYTES:
        return None
    return "cpu"


class BlendEvaluator:
    """Base + adapted loaded once; :meth:`evaluate` scores the blend at one alpha on every split.

    ``group`` (a :class:`harness.pipeline.distributed.DistGroup`, default ``None``) makes this one rank of a
    data-parallel sweep: it blends its own copy and scores its share of every split's examples.

    Raises
    ------
    ModelError, BlendError
        For models that cannot be loaded or blended (different tokenizers, heads with different labels...).
    """

    def __init__(self, request: SweepRequest, loaded: LoadedSuites, timings: dict[str, float], group=None) -> None:
        # torch-backed stages, imported when a sweep runs: `harness validate`, `gate` and `report` never load torch
        from harness.models.adapters import load_adapted
        from harness.models.reft_io import reft_format
        from harness.models.sanity import position_limit

        self.request, self.timings, opts = request, timings, request.options
        self.kind = loaded.model_kind
        # a bar of its own: importing transformers, loading, hashing and checking take 10-15 s on a loaded CPU
        steps = StepProgress(range(3), 3, "loading models", opts.progress, log)
        try:
            with stage_timer(timings, "load_model"):
                steps.describe(f"base {request.base}")
                self.live = load_live(request.base, self.kind, opts)
                # a ReFT adaptation changes no weight: no copy of the base's weights is needed to blend it
                base_sd = None if reft_format(request.adapted) else {
                    k: v.detach().to("cpu").clone() for k, v in self.live.model.state_dict().items()}
                steps.step(note=f"base {request.base}")
                steps.describe(f"adapted {request.adapted}")
                self.adapted = load_adapted(self.live, request.adapted, allow_pickle=opts.allow_pickle,
                                            trust_remote_code=opts.trust_remote_code, lora_scale=True,
                                            reft_positions=opts.reft_positions)
                steps.step(note=f"adapted {request.adapted}")
            steps.describe("checking the pair (names, shapes, finite values, heads)")
            self._check_pair()
            base_head_trained = self._heads(loaded)
            steps.step(note="pair checked")
        finally:
            steps.close()
        self.notes: list[str] = list(self.live.info.get("notes", ()))
        with stage_timer(timings, "tokenize"):
            self.scoring = Scoring(self.live.tokenizer, loaded, opts, self.live.device.type,
                                   max_positions=position_limit(self.live.model), group=group)
        self.scorer = make_scorer(self.live, self.kind, opts if self.adapted.reft is None else unpacked(opts))
        self.own_head_runner = (self._runner(self.base_columns) if request.head == "adapted" and base_head_trained
                                and self.base_columns is not None else None)
        with stage_timer(timings, "blend_setup"):
            self.engine, self.trunk = self._engine(base_sd)
            if self.adapted.reft is not None:
                self.notes.append(intervention_note(self.engine.description))
            elif not self._changed():
                self.notes.append(identical_note(str(request.base), str(request.adapted)))
        self.notes += training_length_notes(request.adapted, list(self.scoring.suites.values()))
        self.runner = self._runner(self.blend_columns, trunk=self.trunk)

    def _engine(self, base_sd: dict) -> tuple[Any, Any]:
        """The blend engine (it takes ``base_sd``) and, for classifiers whose fine-tune left leading layers
        frozen, the trunk cache that replays them."""
        from harness.models.blend import BlendEngine  # torch (see __init__)
        from harness.models.reft import InterventionEngine
        from harness.models.trunk import TrunkCache, frozen_depth

        if self.adapted.reft is not None:
            # ReFT: alpha is the intervention strength (hooks on the live base; no weight is written, every layer
            # runs at every alpha, so no frozen trunk is replayed)
            return InterventionEngine(self.live.model, self.adapted.reft, alpha=0.0), None

        # LoRA/rsLoRA adapters blend by scaling their delta (one model plus the factors, no merged copy);
        # everything else interpolates merged weights (engine.path says which, the manifest records it)
        engine = BlendEngine(self.live.model, base_sd, self.adapted.state_dict, head=self.request.head,
                             lora=self.adapted.lora,
                             reference_device=reference_device(
                                 self.request.options.blend_references, self.live.device.type,
                                 sum(p.numel() * p.element_size() for p in self.live.model.parameters())))
        budget = self.request.options.trunk_cache_bytes
        if self.kind != "classification" or budget <= 0:
            return engine, None
        frozen = frozen_depth(self.live.model, engine.changed_names())
        return engine, (TrunkCache(self.live.model, frozen, budget) if frozen else None)

    def _heads(self, loaded: LoadedSuites) -> bool:
        """Check the heads and set the logit columns (classifiers); returns whether the base's own head is trained
        (then it is also scored as the base with ``--head adapted``)."""
        from harness.models.sanity import check_blend_heads  # torch (see __init__)

        req = self.request
        if self.adapted.reft is not None:
            trained = self._check_reft()
        elif self.kind == "classification":
            # issue 17: no randomly initialised head is scored; the base's own head only when it is trained
            trained = check_blend_heads(self.live, self.adapted, req.head, base_src=str(req.base),
                                        adapted_src=str(req.adapted))
        else:
            trained = False
        self.blend_columns, self.base_columns = (self._columns(classes_of(loaded)) if self.kind == "classification"
                                                 else (None, None))
        return trained

    def _changed(self) -> set[str]:
        """Names of the weights the blend changes (a zero LoRA update changes none)."""
        lora = self.adapted.lora
        return self.engine.changed_names() - (set(lora.target_names) if lora is not None and lora.is_zero else set())

    def _check_reft(self) -> bool:
        """A ReFT adaptation keeps the base's head, so ``--head adapted`` has no meaning; a classifier's own head
        must be trained (issue 17). Returns False (no separate base-own-head point)."""
        from harness.models.sanity import require_trained

        if self.request.head != "shared":
            raise BlendError(format_error("--head adapted does not apply to a ReFT adaptation", where="--head",
                                          expected="shared", got=self.request.head,
                                          fix="a ReFT adaptation keeps the base's head at every alpha: drop --head"))
        if self.kind == "classification":
            require_trained(self.live, where=str(self.request.base))
        return False

    def _runner(self, columns: np.ndarray | None, trunk: Any = None):
        return make_runner(self.scorer, self.live, self.kind, self.request.options, columns=columns, trunk=trunk)

    def _check_pair(self) -> None:
        adp, live = self.adapted, self.live
        if adp.tokenizer is not None and tokenizer_fingerprint(adp.tokenizer) != tokenizer_fingerprint(live.tokenizer):
            raise BlendError(format_error("base and adapted models use different tokenizers",
                                          where=str(self.request.adapted),
                                          expected=f"the base tokenizer ({len(live.tokenizer)} tokens)",
                                          got=f"a tokenizer of {len(adp.tokenizer)} tokens",
                                          fix="blend models that share a tokenizer (a resized vocabulary cannot be "
                                              "interpolated)"))
        if self.kind != "classification":
            return
        b_names = [live.id2label[i] for i in sorted(live.id2label)]
        a_names = [adp.id2label[i] for i in sorted(adp.id2label)]
        generic = all(n.startswith("LABEL_") for n in b_names + a_names)
        if self.request.head == "shared" and (len(b_names) != len(a_names) or (b_names != a_names and not generic)):
            raise BlendError(format_error("base and adapted heads have different labels", where="head",
                                          expected=f"base labels {b_names}", got=f"adapted labels {a_names}",
                                          fix="interpolating heads with different labels mixes classes; use "
                                              "--head adapted to keep the adapted head and blend only the backbone"))

    def _columns(self, classes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(blend columns, base-own-head columns or None) ordering each head's logits as the suite classes."""
        from harness.models.load import align_labels  # torch (see __init__)

        req, opts = self.request, self.request.options
        blend = align_labels(self.adapted.id2label, classes, opts.label_map, where=f"adapted model {req.adapted}")
        try:
            return blend, align_labels(self.live.id2label, classes, opts.label_map, where=f"base model {req.base}")
        except ModelError:
            if req.head == "shared":
                raise
        names = [self.live.id2label[i] for i in sorted(self.live.id2label)]
        base = _columns_by_name(names, classes)
        if base is None:
            log.warning("--head adapted: the base model's labels %s cannot score classes %s; the true base is not "
                        "evaluated as its own point", names, classes)
        else:
            log.info("--head adapted: the true base model's labels %s are mapped by name to %s", names, classes)
        return blend, base

    def base_own_head(self) -> PointResult | None:
        """The true base model with its own head (``--head adapted`` only; else ``None``)."""
        if self.own_head_runner is None:
            return None
        with stage_timer(self.timings, "predict"):
            preds = self.scoring.score(self.own_head_runner, "base", 0.0, self.live.fingerprint, head="own",
                                       blend_path="none")
        with stage_timer(self.timings, "metrics"):
            results = self.scoring.results(preds)
        return PointResult(id="base", role=PointRole.BASE, alpha=0.0, results=results, predictions=preds,
                           label="base model (its own head)")

    def evaluate(self, alpha: float) -> PointResult:
        """Blend at ``alpha`` (0 = base, 1 = adapted) and score every split (store hits are not recomputed)."""
        head = self.request.head
        pid, role, label = point_of(alpha, head)
        # alpha 0 of a weight lerp or an intervention is exactly `harness eval` of the base (the base folder's own
        # module and config; lerp(base, adapted, 0) == base, both sides checked finite; an intervention at strength
        # 0 leaves the forward untouched), so it shares eval's store key (as_model). Not a LoRA scaled by 0: its
        # branch can be non-finite (0 * inf), and on a GPU its peft layers take another generation path. Not alpha
        # 1: the adapted folder's own config and generation config can differ from the base's module (review).
        as_model = False
        if alpha == 0.0 and head == "shared":
            fp, path = self.live.fingerprint, "none"
            as_model = self.engine.path in ("merged", "intervention")
        elif alpha == 1.0:
            fp, path = self.adapted.fingerprint, "none"
        else:
            fp, path = blend_fingerprint(self.live.fingerprint, self.adapted.fingerprint, alpha, head), self.engine.path
        started, computed = time.perf_counter(), self.scoring.n_computed
        with stage_timer(self.timings, "blend"):
            self.engine.apply(alpha)
        with stage_timer(self.timings, "predict"):
            preds = self.scoring.score(self.runner, pid, alpha, fp, head=head, blend_path=path, as_model=as_model)
        with stage_timer(self.timings, "metrics"):
            results = self.scoring.results(preds)
        n_new = self.scoring.n_computed - computed
        log.info("%s: %d splits scored (%d from the results store) in %.1f s",
                 pid if role is PointRole.BLEND else f"{pid} (alpha={alpha:g})", len(preds), len(preds) - n_new,
                 time.perf_counter() - started)
        return PointResult(id=pid, role=role, alpha=alpha, results=results, predictions=preds, label=label)

    def models_info(self) -> dict[str, Any]:
        """The manifest's ``models`` entry."""
        req, adp = self.request, self.adapted
        return {"base": {"source": str(req.base), "path": str(self.live.path), "fingerprint": self.live.fingerprint},
                "adapted": {"source": str(req.adapted), "fingerprint": adp.fingerprint, "kind": adp.kind, **adp.info}}

    def manifest_extra(self) -> dict[str, Any]:
        """What this evaluator did that the manifest records (store use, packing, compile, trunk reuse)."""
        trunk = self.trunk
        reft = self.adapted.reft is not None
        return {"model_kind": self.kind, "blend_path": self.engine.path,
                "blend_kind": "intervention" if reft else "weights",
                "blend_references": None if reft else getattr(self.engine, "reference_location", None),
                "intervention": self.engine.manifest() if reft else None,
                "store_computed_splits": self.scoring.n_computed,
                "packed_batches": getattr(self.scorer, "packed", False),
                "packed_attention": getattr(self.scorer, "packing_mode", None),
                "compiled": self.request.options.compile, "device_map": self.live.info.get("device_map"),
                "trunk_reuse": None if trunk is None else {
                    "frozen_layers": trunk.k, "replayed_passes": trunk.n_replayed,
                    "stored_gib": round(trunk.n_bytes / 2**30, 4)}}

    def close(self) -> None:
        if self.trunk is not None:
            self.trunk.clear()
        self.scoring.close()
