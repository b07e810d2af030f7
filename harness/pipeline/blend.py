"""``blend``: write the blend at one alpha as a checkpoint with provenance."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import harness
from harness.errors import OutputError, format_error
from harness.pipeline.common import RunOptions
from harness.records import canonical_alpha

log = logging.getLogger(__name__)



def _alpha_used(alpha: float) -> float:
    """The canonical alpha (6 decimals) written to the checkpoint; one that rounding would change is refused
    (``1e-7`` would silently be the base), float noise such as ``0.30000000000000004`` is not.

    Raises
    ------
    BlendError
        For an alpha outside [0, 1] or one with more than 6 significant decimals.
    """
    from harness.errors import BlendError

    try:
        used = canonical_alpha(alpha)
    except ValueError as e:
        raise BlendError(str(e)) from e
    if abs(used - float(alpha)) > 1e-9:
        raise BlendError(format_error("alpha has more decimals than a blend keeps (6)", where="--alpha",
                                      expected="a multiple of 0.000001 in [0, 1]", got=f"{alpha!r}, which would be "
                                      f"written as {used:g}" + (" (the base itself)" if used == 0.0 else
                                                                " (the adapted model itself)" if used == 1.0 else ""),
                                      fix=f"pass --alpha {used:g} if that is what you mean"))
    return used


def write_blend(base: str | Path, adapted: str | Path, alpha: float, out: str | Path, *, head: str = "shared",
                options: RunOptions = RunOptions()) -> Path:
    """Write the blend at ``alpha`` as a safetensors checkpoint loadable with
    ``AutoModelForSequenceClassification.from_pretrained`` (after ``harness.register()`` for harness model
    classes), with provenance (base and adapted fingerprints, alpha, head) in its config under ``harness_blend``.

    Raises
    ------
    HarnessError
        ModelError/BlendError for unusable models, OutputError when ``out`` cannot be written.
    """
    from harness.errors import BlendError
    from harness.models.adapters import load_adapted
    from harness.models.blend import head_keys, interpolate, resize_head
    from harness.rundir import clean_stale_siblings, swap_dir
    from harness.models.checks import check_blend_heads
    from harness.models.load import load_model

    alpha = _alpha_used(alpha)
    live = load_model(base, dtype=options.dtype, device="cpu", allow_pickle=options.allow_pickle,
                      trust_remote_code=options.trust_remote_code)
    adp = load_adapted(live, adapted, allow_pickle=options.allow_pickle, trust_remote_code=options.trust_remote_code)
    check_blend_heads(live, adp, head, base_src=str(base), adapted_src=str(adapted))  # no random head written
    base_sd = live.model.state_dict()
    heads = head_keys(base_sd, getattr(live.model, "base_model_prefix", None)) if head == "adapted" else None
    blended = interpolate(base_sd, adp.state_dict, alpha, head=head, head_names=heads)
    params = dict(live.model.named_parameters())
    for name in heads or ():
        if name in params and params[name].shape != blended[name].shape:
            resize_head(live.model, name, params[name], blended[name])  # a new head with another label count
    live.model.load_state_dict(blended, strict=True)
    if head == "adapted":
        live.model.config.num_labels = len(adp.id2label)
    if head == "adapted" or alpha == 1.0:
        live.model.config.id2label = dict(adp.id2label)
        live.model.config.label2id = {v: k for k, v in adp.id2label.items()}
    live.model.config.harness_blend = {"base": str(base), "adapted": str(adapted), "alpha": alpha, "head": head,
                                       "base_fingerprint": live.fingerprint,
                                       "adapted_fingerprint": adp.fingerprint, "adapted_kind": adp.kind,
                                       "harness_version": harness.__version__}
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(format_error("--out names a file", where=str(out), fix="choose a folder"))
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_siblings(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        live.model.save_pretrained(str(tmp), safe_serialization=True)
        live.tokenizer.save_pretrained(str(tmp))
        swap_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
