"""Mean-pooling sequence classifier: a transformers encoder, masked mean pooling, optional L2 normalisation and a
linear head.

This is the architecture of sentence-transformers (Reimers & Gurevych, 2019, "Sentence-BERT: Sentence Embeddings
using Siamese BERT-Networks", EMNLP) and of SetFit-style classifiers. Encoders such as all-MiniLM-L6-v2 were trained
with masked mean pooling; the stock ``BertForSequenceClassification`` classifies from the CLS pooler, which those
encoders never trained, so a head on it starts from much worse features.

The class is an ordinary transformers model with its own ``model_type`` (``harness_mean_pooling``), saved and loaded
as a safetensors checkpoint with ``save_pretrained`` / ``from_pretrained``. Its parameter names are stable and
simple, because weight-space interpolation matches them by key: ``encoder.*`` (the encoder's own names, e.g.
``encoder.embeddings.word_embeddings.weight``), ``classifier.weight`` and ``classifier.bias``.

Nothing is registered on import. :func:`register` (called by :func:`harness.register`) makes the class known to
``AutoConfig`` and ``AutoModelForSequenceClassification``.
"""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from harness.errors import ModelError, format_error

__all__ = [
    "MODEL_TYPE",
    "MeanPoolingConfig",
    "MeanPoolingForSequenceClassification",
    "masked_mean_pool",
    "from_sentence_transformer",
    "register",
    "is_registered",
]

logger = logging.getLogger(__name__)

#: The ``model_type`` written into ``config.json`` of every checkpoint of this class.
MODEL_TYPE = "harness_mean_pooling"

_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE = "Transformer", "Pooling", "Normalize"


class MeanPoolingConfig(PreTrainedConfig):
    """Configuration of :class:`MeanPoolingForSequenceClassification`.

    Parameters
    ----------
    encoder : PreTrainedConfig or dict, default=None
        The encoder's configuration (any ``AutoModel`` config, e.g. a ``BertConfig``); a dict needs its
        ``model_type``. ``None`` gives a default BERT config. Saved as a nested sub-config in ``config.json``.
    normalize : bool, default=True
        Whether the pooled vector is L2-normalised before the head (sentence-transformers' ``Normalize`` step).
    num_labels, id2label, label2id
        The usual transformers classification fields (``id2label`` maps class index to class name).
    """

    model_type = MODEL_TYPE
    # Declared the plain way (not with transformers 5.2x's SubConfigSpec) so the class works across 5.x; the
    # encoder is built in __post_init__ before the base class walks `sub_configs` (attention implementation).
    sub_configs = {"encoder": AutoConfig}

    encoder: PreTrainedConfig | dict | None = None
    normalize: bool = True

    def __post_init__(self, **kwargs):
        self.encoder = _encoder_config(self.encoder)
        if not isinstance(self.normalize, bool):
            raise ModelError(format_error("normalize of the mean-pooling config must be a bool",
                                          where=MODEL_TYPE, expected="true or false", got=self.normalize))
        super().__post_init__(**kwargs)


def _encoder_config(value: PreTrainedConfig | dict | None) -> PreTrainedConfig:
    """The encoder sub-config from a config, a dict with ``model_type`` (as in config.json) or None (BERT)."""
    if isinstance(value, PreTrainedConfig):
        return value
    if value is None:
        return AutoConfig.for_model("bert")
    if not isinstance(value, dict) or "model_type" not in value:
        raise ModelError(format_error("the encoder sub-config must be a config or a dict with a model_type",
                                      where=f"{MODEL_TYPE} config: encoder", expected="e.g. {model_type: bert, ...}",
                                      got=type(value).__name__ if not isinstance(value, dict) else sorted(value)))
    fields = dict(value)
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def masked_mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor,
                     normalize: bool = False) -> torch.Tensor:
    """Masked mean of token vectors, optionally L2-normalised (Reimers & Gurevych, 2019).

    ``pooled = sum_t(mask_t * h_t) / max(sum_t mask_t, 1e-9)``; if ``normalize``:
    ``pooled / max(||pooled||_2, 1e-12)``. Padding positions (mask 0) contribute nothing, so the result does not
    depend on how much padding a sequence carries.

    Parameters
    ----------
    hidden_states : Tensor of shape (batch, seq, hidden), floating point
        The encoder's last hidden states.
    attention_mask : Tensor of shape (batch, seq), int or bool
        1 for real tokens, 0 for padding.
    normalize : bool, default=False
        Whether to L2-normalise each pooled vector.

    Returns
    -------
    Tensor of shape (batch, hidden), same dtype as ``hidden_states``
    """
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    pooled = (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if normalize:
        pooled = F.normalize(pooled, p=2.0, dim=1, eps=1e-12)
    return pooled


def _build_encoder(config: PreTrainedConfig) -> PreTrainedModel:
    """The bare encoder for ``config``, without its CLS pooler where the class lets us drop it (it is never used,
    and unused parameters would only add keys that no gradient reaches)."""
    model_class = MODEL_MAPPING[type(config)]
    kwargs = {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        kwargs["add_pooling_layer"] = False
    return model_class(config, **kwargs)


class MeanPoolingForSequenceClassification(PreTrainedModel):
    """Encoder + masked mean pooling + optional L2 normalisation + linear head.

    Shapes: ``input_ids`` (batch, seq) -> encoder hidden states (batch, seq, hidden) -> pooled (batch, hidden)
    (see :func:`masked_mean_pool`) -> ``logits = W pooled + b`` of shape (batch, num_labels).

    Parameters are ``encoder.*`` (the encoder's own names) and ``classifier.weight`` (num_labels, hidden) /
    ``classifier.bias`` (num_labels,). No weights are tied. Weights loaded by ``from_pretrained`` are never
    re-initialised; only a missing head would be (normal with the encoder's ``initializer_range``, zero bias).
    """

    config_class = MeanPoolingConfig
    config: MeanPoolingConfig
    base_model_prefix = "encoder"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_attention_backend = True

    def __init__(self, config: MeanPoolingConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.encoder = _build_encoder(config.encoder)
        self.classifier = nn.Linear(config.encoder.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # The encoder is a PreTrainedModel and initialises itself; only the head is ours. The `init` functions
        # leave tensors flagged as loaded (`_is_hf_initialized`) untouched.
        if module is getattr(self, "classifier", None):
            std = getattr(self.config.encoder, "initializer_range", None) or 0.02
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)

    def embed(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Pooled (and, if ``config.normalize``, L2-normalised) sentence vectors of shape (batch, hidden)."""
        return self._pool(input_ids, attention_mask, token_type_ids, **kwargs)[0]

    def _pool(self, input_ids, attention_mask, token_type_ids, inputs_embeds=None, **kwargs):
        ref = input_ids if input_ids is not None else inputs_embeds
        if ref is None:
            raise ModelError(format_error("the mean-pooling classifier got no input", expected="input_ids",
                                          got="None", fix="pass input_ids and attention_mask"))
        if attention_mask is None:
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        enc_kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if token_type_ids is not None:
            enc_kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                           return_dict=True, **enc_kwargs)
        return masked_mean_pool(out.last_hidden_state, attention_mask, self.config.normalize), out

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs: Any) -> SequenceClassifierOutput | tuple:
        """Classify a batch.

        Parameters
        ----------
        input_ids : LongTensor of shape (batch, seq)
            Token ids, right-padded (with absolute position embeddings, padding on the right never changes the
            result; left padding shifts positions).
        attention_mask : Tensor of shape (batch, seq), default=None
            1 for real tokens, 0 for padding; ``None`` means no padding.
        token_type_ids : LongTensor of shape (batch, seq), default=None
            Passed to the encoder when given.
        labels : LongTensor of shape (batch,), default=None
            Class indices; when given, ``loss`` is the mean cross-entropy of the logits (computed in float32).
        inputs_embeds, output_attentions, output_hidden_states : default=None
            Passed through to the encoder (PEFT's wrappers pass them).
        return_dict : bool, default=None
            ``False`` returns a tuple instead of the output object.

        Returns
        -------
        SequenceClassifierOutput
            ``logits`` of shape (batch, num_labels), ``loss`` (scalar) when ``labels`` is given, and the encoder's
            ``hidden_states`` / ``attentions`` when asked for.
        """
        pooled, out = self._pool(input_ids, attention_mask, token_type_ids, inputs_embeds=inputs_embeds,
                                 output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                 **kwargs)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        result = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                          attentions=out.attentions)
        return result if return_dict is not False else result.to_tuple()


def register() -> None:
    """Register :class:`MeanPoolingConfig` with ``AutoConfig`` and the model with
    ``AutoModelForSequenceClassification`` (idempotent; import has no such side effect)."""
    AutoConfig.register(MODEL_TYPE, MeanPoolingConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(MeanPoolingConfig, MeanPoolingForSequenceClassification,
                                                exist_ok=True)


def is_registered() -> bool:
    """Whether :func:`register` has run in this process."""
    return MODEL_TYPE in CONFIG_MAPPING


# --- sentence-transformers folders ---------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelError(format_error(f"{what} not found", where=str(path),
                                      fix="point at a sentence-transformers folder (it holds modules.json)")) from e
    except (OSError, ValueError) as e:
        raise ModelError(format_error(f"{what} cannot be read", where=str(path), got=str(e),
                                      fix="re-download or re-save the model")) from e


def _st_modules(path: Path) -> tuple[Path, Path, bool]:
    """(transformer folder, pooling folder, has Normalize) from ``modules.json``; raises on anything else."""
    modules = _read_json(path / "modules.json", "modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    allowed = [[_ST_TRANSFORMER, _ST_POOLING], [_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE]]
    if kinds not in allowed:
        raise ModelError(format_error(
            "unsupported sentence-transformers pipeline", where=str(path / "modules.json"),
            expected="Transformer, Pooling and optionally Normalize, in that order",
            got=", ".join(str(m.get("type")) for m in modules),
            fix="use a model without Dense or other extra modules, or build the classifier yourself"))
    return path / modules[0].get("path", ""), path / modules[1].get("path", ""), _ST_NORMALIZE in kinds


def _check_mean_pooling(pooling_dir: Path) -> None:
    cfg = _read_json(pooling_dir / "config.json", "pooling config")
    on = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v is True)
    mode = cfg.get("pooling_mode")
    if (isinstance(mode, str) and mode != "mean") or (not isinstance(mode, str) and on != ["pooling_mode_mean_tokens"]):
        raise ModelError(format_error(
            "the sentence-transformers model does not use mean pooling", where=str(pooling_dir / "config.json"),
            expected="pooling_mode_mean_tokens: true and no other pooling mode", got=mode or (", ".join(on) or "none"),
            fix="this class implements masked mean pooling only; use a mean-pooling model"))


def _load_encoder_weights(encoder: PreTrainedModel, weights: Path) -> None:
    if not weights.is_file():
        other = sorted(p.name for p in weights.parent.glob("*")
                       if p.suffix in (".bin", ".pt", ".pth", ".safetensors") or p.name.endswith(".index.json"))
        raise ModelError(format_error(
            "encoder weights not found as model.safetensors", where=str(weights.parent),
            expected="a single model.safetensors file (pickle checkpoints are not read)", got=other or "no weights",
            fix="convert the checkpoint to safetensors (save_pretrained(..., safe_serialization=True))"))
    state = load_file(str(weights))
    prefix = f"{encoder.base_model_prefix}."
    if encoder.base_model_prefix and state and all(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items()}
    result = encoder.load_state_dict(state, strict=False)
    ignorable = ("pooler.", "embeddings.position_ids", "embeddings.token_type_ids")
    unexpected = [k for k in result.unexpected_keys if not k.startswith(ignorable)]
    if result.missing_keys or unexpected:
        raise ModelError(format_error(
            "encoder weights do not match the encoder config", where=str(weights),
            expected="the keys of the encoder built from config.json",
            got=f"missing {result.missing_keys[:5]}, unexpected {unexpected[:5]}",
            fix="check that config.json and model.safetensors belong to the same model"))


def from_sentence_transformer(path: str | Path, num_labels: int = 2, id2label: dict[int, str] | None = None,
                              normalize: bool | None = None) -> MeanPoolingForSequenceClassification:
    """Build the classifier from a sentence-transformers model folder (Reimers & Gurevych, 2019).

    Reads ``modules.json`` (Transformer, mean Pooling, optional Normalize), the encoder's ``config.json`` and
    ``model.safetensors`` (safetensors only), and ``1_Pooling/config.json`` (or wherever ``modules.json`` points).
    The head is freshly initialised (normal, std = the encoder's ``initializer_range``; zero bias) from torch's
    global RNG: seed it, or overwrite ``classifier`` afterwards (the demo fits a linear probe).

    Parameters
    ----------
    path : str or Path
        The sentence-transformers folder.
    num_labels : int, default=2
        Number of classes.
    id2label : dict of int to str, default=None
        Class names by index (``label2id`` is derived). Default: ``LABEL_0``, ``LABEL_1``, ...
    normalize : bool, default=None
        L2-normalise the pooled vector; ``None`` means: if and only if ``modules.json`` lists a
        ``sentence_transformers.models.Normalize`` step.

    Returns
    -------
    MeanPoolingForSequenceClassification
        In eval mode, float32 unless the encoder config says otherwise.

    Raises
    ------
    ModelError
        If a file is missing or unreadable, the pipeline has modules other than Transformer/Pooling/Normalize,
        pooling is not mean, the weights are not ``model.safetensors`` or do not match the config, or
        ``id2label`` does not have ``num_labels`` entries.
    """
    path = Path(path)
    transformer_dir, pooling_dir, has_normalize = _st_modules(path)
    _check_mean_pooling(pooling_dir)
    if id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if sorted(id2label) != list(range(num_labels)):
        raise ModelError(format_error("id2label does not match num_labels", where="from_sentence_transformer",
                                      expected=f"keys 0..{num_labels - 1}", got=sorted(id2label),
                                      fix="pass one class name per label index"))
    enc_dict = _read_json(transformer_dir / "config.json", "encoder config.json")
    if "model_type" not in enc_dict:
        raise ModelError(format_error("encoder config.json has no model_type", where=str(transformer_dir),
                                      fix="add the model_type (e.g. bert) to config.json"))
    enc_dict.pop("architectures", None)
    enc_dict.pop("_name_or_path", None)
    enc_config = AutoConfig.for_model(**enc_dict)
    config = MeanPoolingConfig(encoder=enc_config, normalize=has_normalize if normalize is None else normalize,
                               id2label=id2label, label2id={v: k for k, v in id2label.items()})
    model = MeanPoolingForSequenceClassification(config)
    _load_encoder_weights(model.encoder, transformer_dir / "model.safetensors")
    logger.info("built %s from sentence-transformers folder %s (normalize=%s)", MODEL_TYPE, path, config.normalize)
    return model.eval()
