"""Stage 4g: reuse of the frozen trunk across alphas.

When a fine-tune leaves the embeddings and the first ``k`` encoder layers unchanged (a head-only or linear-probe
fine-tune, the "linear classifier" setting of WiSE-FT, or a top-layers-only fine-tune), every blend has exactly the
base model's values there: ``lerp(w, w, alpha) == w`` bit for bit. The hidden states after the first ``k`` layers
then do not depend on alpha. :class:`TrunkCache` computes them once per split, on the first scoring pass, and
later passes run only the remaining layers and the head from the stored states; logits are bit-identical to a full
forward.

:func:`frozen_depth` finds ``k``: it runs one tiny forward to see which encoder layer (or the part before the
first layer, or after the last) each weight is used in, and takes the first position of any weight that differs
between base and adapted. Only BERT-family encoders (:data:`harness.models.packed.SUPPORTED_MODEL_TYPES`, whose
encoder stack just chains its layers) qualify; other architectures get ``k = 0`` (no reuse).

Memory: the stored states of one split take (real or padded tokens) x hidden x the model's dtype (BERT-large,
10,000 English sentences, bf16: about 1 GB); the cache holds at most ``budget_bytes`` in all, and splits that do not
fit are scored with full forwards, so memory does not grow with the number of suites beyond the budget.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import torch

from harness.models.packed import SUPPORTED_MODEL_TYPES, encoder_parts

__all__ = ["DEFAULT_BUDGET_BYTES", "TrunkCache", "frozen_depth", "weight_positions"]

log = logging.getLogger(__name__)

DEFAULT_BUDGET_BYTES = 2 * 2**30
"""The default bound on stored states (2 GiB; the ``trunk_cache_gib`` setting, :class:`harness.settings.Settings`)."""


def _layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The encoder layer list of a supported encoder (BERT family: the stack only chains its layers, each taking
    and returning the hidden states), else ``None``. Others (e.g. DeBERTa, whose stack adds work between layers
    and whose layers return tuples) get no reuse."""
    base, stack = encoder_parts(model)
    if getattr(getattr(base, "config", None), "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return None
    layers = getattr(stack, "layer", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) else None


@torch.inference_mode()
def weight_positions(model: torch.nn.Module) -> dict[str, int]:
    """Where each named parameter and buffer of ``model`` is first used in a forward: 0 before the first encoder
    layer, ``i + 1`` inside layer ``i``, ``n_layers + 1`` after the last (pooler, head). Found by running one
    3-token input through the model with forward pre-hooks; a tensor whose module never runs is placed at 0
    (conservative). Empty dict when the model has no encoder layer stack or the forward fails."""
    layers = _layers(model)
    if layers is None:
        return {}
    position = {"now": 0}
    first: dict[int, int] = {}
    hooks = []

    def enter(module, *_):
        first.setdefault(id(module), position["now"])

    def enter_layer(i):
        def hook(module, *_):
            position["now"] = i + 1
        return hook

    def after_stack(*_):
        position["now"] = len(layers) + 1

    try:
        for i, layer in enumerate(layers):
            hooks.append(layer.register_forward_pre_hook(enter_layer(i)))
        hooks.append(layers[-1].register_forward_hook(after_stack))
        for m in model.modules():
            hooks.append(m.register_forward_pre_hook(enter))
        device = next(model.parameters()).device
        ids = torch.tensor([[1, 5, 2]], device=device)
        set_stance = getattr(torch.compiler, "set_stance", None)  # compiled layers run eagerly: no compile here
        with set_stance("force_eager") if set_stance is not None else contextlib.nullcontext():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
    except Exception:  # an unusual forward signature: no reuse, never an error
        log.debug("trunk reuse: the probe forward failed; scoring every layer", exc_info=True)
        return {}
    finally:
        for h in hooks:
            h.remove()
    by_tensor: dict[int, int] = {}  # a tied tensor is placed where it is first used by any of its modules
    named: list[tuple[str, torch.Tensor]] = []
    for mod_name, m in model.named_modules(remove_duplicate=False):
        pos = first.get(id(m), 0)
        for name, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            by_tensor[id(t)] = min(by_tensor.get(id(t), pos), pos)
            named.append((f"{mod_name}.{name}" if mod_name else name, t))
    return {name: by_tensor[id(t)] for name, t in named}


def frozen_depth(model: torch.nn.Module, changed: Iterable[str]) -> int:
    """Number ``k`` of leading encoder layers of ``model`` that, with everything before them, contain none of the
    ``changed`` tensor names (state-dict names whose base and adapted values differ); 0 means no reuse. A name the
    probe forward did not place counts as position 0."""
    positions = weight_positions(model)
    if not positions:
        return 0
    n_layers = len(_layers(model))
    first_changed = min((positions.get(name, 0) for name in changed), default=n_layers + 1)
    return max(0, min(n_layers, first_changed - 1))


class _Replay(torch.nn.Module):
    """Stands in for the frozen layers: returns the stored output of layer ``k - 1`` for the current batch."""

    def __init__(self, states: list) -> None:
        super().__init__()
        self._states = iter(states)
        self._n = len(states)
        self.used = 0

    def forward(self, hidden_states, *args, **kwargs):
        stored = next(self._states, None)
        first = stored if stored is None or isinstance(stored, torch.Tensor) else stored[0]
        if first is None or first.shape != hidden_states.shape:
            got = None if first is None else tuple(first.shape)
            raise RuntimeError(f"trunk cache does not match the batch: stored {got}, batch "
                               f"{tuple(hidden_states.shape)} (the split must be batched the same way every pass)")
        self.used += 1
        return stored

    def check_done(self) -> None:
        if self.used != self._n:
            raise RuntimeError(f"trunk cache: the pass used {self.used} of {self._n} stored batches (the split must "
                               "be batched the same way every pass)")


class TrunkCache:
    """Stores the output of the last frozen encoder layer per split and replays it on later passes.

    Parameters
    ----------
    model : torch.nn.Module
        The live model (transformers encoder with ``base_model.encoder.layer``); its weights before layer ``k``
        must not change between passes (the sweep guarantees it by :func:`frozen_depth`).
    k : int
        Frozen layers, 1 to the number of layers.
    budget_bytes : int, default=DEFAULT_BUDGET_BYTES
        Bound on the stored states of all splits; a split that would exceed it is never cached (the sweep passes
        :attr:`harness.settings.Settings.trunk_cache_bytes`).

    Raises
    ------
    ValueError
        If ``k`` is out of range or the model has no encoder layer stack.
    """

    def __init__(self, model: torch.nn.Module, k: int, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        layers = _layers(model)
        if layers is None or not 1 <= k <= len(layers):
            raise ValueError(f"trunk cache needs 1 <= k <= number of encoder layers, got k={k} "
                             f"for {0 if layers is None else len(layers)} layers")
        self.model, self.k = model, k
        self.budget_bytes = budget_bytes
        self._stack = encoder_parts(model)[1]
        self._states: dict[str, list] = {}  # per split: layer k-1's output per batch, as that layer returned it
        self._too_big: set[str] = set()
        self.n_bytes = 0  # bytes stored
        self.n_replayed = 0  # passes that ran from stored states

    @contextlib.contextmanager
    def scoring(self, key: str) -> Iterator[str]:
        """Wrap one scoring pass of the split ``key`` (its tokenized cache key). The first pass runs every layer
        and stores the states after the first ``k`` layers; later passes replay them and run only the layers after
        those (indices ``k`` to the last).
        Yields ``"capture"``, ``"replay"`` or ``"full"`` (the split did not fit the budget)."""
        if key in self._states:
            layers = self._stack.layer
            replay = _Replay(self._states[key])
            self._stack.layer = torch.nn.ModuleList([replay, *layers[self.k:]])
            try:
                yield "replay"
                replay.check_done()
                self.n_replayed += 1
            finally:
                self._stack.layer = layers
            return
        if key in self._too_big:
            yield "full"
            return
        captured: list = []
        state = {"bytes": 0, "over": False, "pending": None}

        def start(module, args, kwargs):  # a forward of the stack begins: drop what a failed forward left
            state["pending"] = None

        def capture(module, args, output):
            if not state["over"]:
                state["pending"] = output.detach().clone() if isinstance(output, torch.Tensor) else \
                    tuple(t.detach().clone() if isinstance(t, torch.Tensor) else t for t in output)

        def commit(module, args, output):  # the stack's forward completed (after the packer's own hooks)
            pending, state["pending"] = state["pending"], None
            if pending is None or state["over"]:
                return
            first = pending if isinstance(pending, torch.Tensor) else pending[0]
            state["bytes"] += first.numel() * first.element_size()
            if self.n_bytes + state["bytes"] > self.budget_bytes:
                state["over"] = True
                captured.clear()
            else:
                captured.append(pending)

        hooks = [self._stack.register_forward_pre_hook(start, with_kwargs=True),
                 self._stack.layer[self.k - 1].register_forward_hook(capture),
                 self._stack.register_forward_hook(commit)]
        try:
            yield "capture"
        finally:
            for h in hooks:
                h.remove()
        if state["over"]:
            self._too_big.add(key)
            log.info("trunk cache: split %s needs more than the %.1f GiB budget; scoring it in full",
                     key, self.budget_bytes / 2**30)
        else:
            self._states[key] = captured
            self.n_bytes += state["bytes"]

    def clear(self) -> None:
        """Drop every stored state (:attr:`n_bytes` keeps what was stored, for the manifest); the cache is unusable
        afterwards."""
        self._states.clear()
        self._too_big.clear()
        self.budget_bytes = 0
