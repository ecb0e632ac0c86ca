"""What a model (and its separate MTP file, its vision projector) holds, read without loading weights."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import gguf

from engine.api import ModelFileError
from engine.gguf.hparams import LayerShape, ModelHeader, interpret
from engine.gguf.parts import ModelFiles, read_model_files
from engine.gguf.reader import GgufFile, read_gguf

MtpWeights = Literal["embedded", "separate", "absent", "none"]
ModelPaths = Path | Sequence[Path]  # one file, or parts of a set picked together

_FILE_TYPES: dict[int, str] = {
    int(ft): ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    for ft in gguf.LlamaFileType
    if ft != gguf.LlamaFileType.GUESSED
}
_FILE_TYPES[41] = "Q2_0"  # LLAMA_FTYPE_MOSTLY_Q2_0
_FTYPE_GUESSED = int(gguf.LlamaFileType.GUESSED)
_MIX_SHARE = 0.01  # tensor types holding less of the weights than this are left out of the mixture
# A quantization's name as model hubs put it in file names ("...-Q4_K_M-00001-of-00003.gguf").
_NAMED_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d_(?:K_[SML]|K|[0-9]|XXS|XS|S|M|NL)|BF16|F16|F32|MXFP4)(?![A-Za-z0-9])", re.IGNORECASE
)


@dataclass(frozen=True)
class ModelInfo:
    """What a model's files hold, read without loading weights."""

    path: Path  # what llama.cpp is given: the file, or part 1 of a set
    parts: tuple[Path, ...]  # every file of the model in order (one for a single-file model)
    opened_part: int  # which part the user chose (0-based); a later part opens the whole set
    architecture: str
    name: str | None
    n_params: int  # tensor elements of the model, plus those of the MTP file it does not share
    file_bytes: int  # all parts together
    mtp_file_bytes: int | None
    quantization: str  # the file type with its mixture, e.g. "Q4_K_M (Q4_K / Q6_K)"
    quantization_types: tuple[tuple[str, int], ...]  # (ggml type, bytes) of the weight matrices, most bytes first
    context_length: int
    n_layer: int  # trunk layers: block_count - nextn_predict_layers
    n_embd: int
    n_vocab: int
    n_mtp_heads: int  # heads usable for drafting (declared by the file that holds them)
    mtp_weights: MtpWeights
    mtp_path: Path | None  # the separate MTP file, or part 1 of it
    mtp_parts: tuple[Path, ...]
    has_chat_template: bool
    n_swa: int
    weights_bytes: int  # tensor data of the model plus the whole MTP file
    # What estimate_memory needs:
    layers: tuple[LayerShape, ...]  # trunk blocks, then the MTP heads that will run
    trunk_bytes: int  # weights llama.cpp maps without MTP (heads are skipped)
    mtp_bytes: int  # weights that loading the heads adds: embedded head blocks, or the whole MTP file
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_ff_shexp: int
    # A separate MTP file given for a model that embeds its heads: checked (a wrong one is refused), not used.
    mtp_unused: Path | None = None

    @property
    def n_parts(self) -> int:
        return len(self.parts)


@dataclass(frozen=True)
class ProjectorInfo:
    """A vision projector (mmproj) file: the image encoder that turns pictures into model tokens."""

    path: Path
    projector_type: str  # clip.cpp's name, e.g. "step3vl"
    n_embd_out: int | None  # the language model width its image tokens have
    image_size: int | None
    n_params: int
    file_bytes: int
    quantization: str


def _chosen(paths: ModelPaths) -> list[Path]:
    return [paths] if isinstance(paths, Path) else list(paths)


def _read(paths: ModelPaths) -> tuple[ModelFiles, ModelHeader]:
    files = read_model_files(_chosen(paths))
    try:
        return files, interpret(files.merged)
    except ModelFileError:
        raise
    except Exception as e:  # a shape of damage we did not foresee; never crash on it
        raise ModelFileError(
            f"{files.path.name} could not be read as GGUF ({type(e).__name__}: {e}); the file is damaged"
        ) from None


def quantization(f: GgufFile) -> tuple[str, tuple[tuple[str, int], ...]]:
    """The file type users know it by, with the tensor types that make it up by bytes.

    Quantizations mix types per tensor (Q4_K_M keeps some matrices in Q6_K), so
    "Q4_K_M (Q4_K / Q6_K)" says what the bytes are; one type alone is just its name. Vectors
    (norms, biases) stay F32 in every quantization and are left out. The name is the one in the file
    name when it has one: publishers often quantize with a high default type and override most
    tensors (the Step 3.5 Flash Q4_K_M set declares Q8_0, which holds 8 % of its bytes).
    """
    by_type: Counter[str] = Counter()
    for t in f.tensors:
        if t.n_dims > 1:
            by_type[t.type_name] += t.n_bytes
    ranked = tuple(by_type.most_common())
    ftype = f.uint("general.file_type")
    if (named := _NAMED_QUANT.search(f.path.name)) is not None:
        name = named.group(1).upper()
    elif ftype is not None and (ftype & ~_FTYPE_GUESSED) in _FILE_TYPES:
        name = _FILE_TYPES[ftype & ~_FTYPE_GUESSED]
    else:
        name = ranked[0][0] if ranked else "unknown"
    total = sum(by_type.values()) or 1
    mix = [t for t, n in ranked if n >= _MIX_SHARE * total]
    if mix == [name] or not mix:
        return name, ranked
    return f"{name} ({' / '.join(mix)})", ranked


def _mismatch(mtp: ModelHeader, main: ModelHeader) -> str | None:
    for what, a, b in (
        ("architecture", mtp.arch, main.arch),
        ("width", mtp.n_embd, main.n_embd),
        ("vocabulary size", mtp.n_vocab, main.n_vocab),
        ("trunk layers", mtp.n_layer, main.n_layer),
    ):
        if a != b:
            return f"{what} {a} vs {b}"
    return None


def _separate_heads(main: ModelHeader, mtp_paths: ModelPaths) -> tuple[ModelFiles, ModelHeader]:
    files, mtp = _read(mtp_paths)
    a, b = mtp.file.name, main.file.name
    if (problem := _mismatch(mtp, main)) is not None:
        raise ModelFileError(f"{a} does not match {b}: {problem}; choose the MTP file made for {b}", "mismatch")
    if mtp.n_mtp == 0:
        raise ModelFileError(f"{a} declares no MTP heads; choose the MTP file made for {b}", "mismatch")
    if not mtp.has_head_weights():
        raise ModelFileError(
            f"{a} declares MTP heads but holds none of their weights; choose the MTP file made for {b}", "mismatch"
        )
    return files, mtp


def inspect_model(paths: ModelPaths, mtp_paths: ModelPaths | None = None) -> ModelInfo:
    """Read a model's metadata and tensor directory (no weights) and check that llama.cpp can load it.

    `paths` is the model file, any part of a multi-part set, or several parts picked together:
    the whole set is read. mtp_paths is a separate file (or set) holding the MTP heads. It is
    used only when the model does not embed them; embedded heads take precedence, and a separate
    file given anyway must still be one made for the model (ModelFileError otherwise): a wrong
    file is refused, never silently ignored. A right one is reported in `mtp_unused`.
    """
    files, main = _read(paths)
    if main.is_mtp_only:
        raise ModelFileError(
            f"{main.file.name} is an MTP-only file (it has the MTP heads but no trunk); "
            "open the main model file and give this one as the separate MTP file",
            "mtp_only",
        )
    mtp_files: ModelFiles | None = None
    mtp_model: ModelHeader | None = None
    unused: Path | None = None
    if main.n_mtp > 0 and main.has_head_weights():
        weights: MtpWeights = "embedded"
        heads = main.layers[main.n_layer :]
        mtp_bytes = sum(t.n_bytes for t in main.head_tensors())
        if mtp_paths is not None:
            unused = _separate_heads(main, mtp_paths)[0].path
    elif mtp_paths is not None:
        mtp_files, mtp_model = _separate_heads(main, mtp_paths)
        weights = "separate"
        heads = mtp_model.layers[mtp_model.n_layer :]
        # llama.cpp loads an MTP-only file as a model of its own: all its tensors are mapped.
        mtp_bytes = sum(t.n_bytes for t in mtp_model.file.tensors)
    else:
        weights = "absent" if main.n_mtp > 0 else "none"
        heads = main.layers[main.n_layer :]
        mtp_bytes = 0

    head_names = {t.name for t in main.head_tensors()}
    separate_tensors = mtp_model.file.tensors if mtp_model else []
    extra = [t for t in separate_tensors if t.name not in main.tensor_names]
    label, types = quantization(main.file)
    return ModelInfo(
        path=files.path,
        parts=files.parts,
        opened_part=files.opened_part,
        architecture=main.arch,
        name=main.file.string("general.name"),
        n_params=sum(t.n_elements for t in main.file.tensors) + sum(t.n_elements for t in extra),
        file_bytes=main.file.size,
        mtp_file_bytes=mtp_model.file.size if mtp_model else None,
        quantization=label,
        quantization_types=types,
        context_length=main.context_length,
        n_layer=main.n_layer,
        n_embd=main.n_embd,
        n_vocab=main.n_vocab,
        n_mtp_heads=len(heads),
        mtp_weights=weights,
        mtp_path=mtp_files.path if mtp_files else None,
        mtp_parts=mtp_files.parts if mtp_files else (),
        has_chat_template="tokenizer.chat_template" in main.file.kv,
        n_swa=main.n_swa,
        weights_bytes=sum(t.n_bytes for t in main.file.tensors) + sum(t.n_bytes for t in separate_tensors),
        layers=main.layers[: main.n_layer] + heads,
        trunk_bytes=sum(t.n_bytes for t in main.file.tensors if t.name not in head_names),
        mtp_bytes=mtp_bytes,
        n_expert=main.n_expert,
        n_expert_used=main.n_expert_used,
        n_ff_exp=main.n_ff_exp,
        n_ff_shexp=main.n_ff_shexp,
        mtp_unused=unused,
    )


# --- vision projectors ---


def inspect_projector(path: Path) -> ProjectorInfo:
    """Read a vision projector's header; ModelFileError if the file is not one."""
    f = read_gguf(path)
    if f.string("general.architecture") != "clip":
        raise ModelFileError(
            f"{path.name} is not a vision projector (mmproj) file; choose the mmproj-*.gguf made for the model",
            "mismatch",
        )
    kind = f.string("clip.projector_type") or f.string("clip.vision.projector_type")
    if kind is None or not f.tensors:
        raise f.damaged("it is a projector file without a projector type or weights")
    label, _ = quantization(f)
    return ProjectorInfo(
        path=path,
        projector_type=kind,
        n_embd_out=f.uint("clip.vision.projection_dim"),
        image_size=f.uint("clip.vision.image_size"),
        n_params=sum(t.n_elements for t in f.tensors),
        file_bytes=f.size,
        quantization=label,
    )


def is_projector(path: Path) -> bool:
    """Whether a readable GGUF says it is a vision projector (never raises)."""
    try:
        return read_gguf(path).string("general.architecture") == "clip"
    except ModelFileError:
        return False


def projector_beside(model_path: Path) -> Path | None:
    """A vision projector (`mmproj*.gguf`) in the model's folder, as model hubs ship them, or None.

    With several, the one whose name shares the most leading characters with the model's wins.
    """
    try:
        candidates = sorted(p for p in model_path.parent.glob("*.gguf") if "mmproj" in p.name.lower())
    except OSError:
        return None
    found = [p for p in candidates if p.is_file() and is_projector(p)]
    if not found:
        return None

    def shared_prefix(p: Path) -> int:
        a, b = p.name.lower().replace("mmproj-", ""), model_path.name.lower()
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    return max(found, key=shared_prefix)
