"""Step 3.5 Flash at its real size, without its weights: the published Q4_K_M set as headers over holes.

What inspect_model, the memory estimate and the verdict say about a 116 GiB, three-part,
128,896-token model, and a check that the fixture's tensor types are the ones the real
llama-quantize chooses for the same command line (tests/fixtures/step_flash.py ports its
rules and its --tensor-type overrides).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from engine.gguf import estimate_memory, free_memory_bytes, inspect_model, memory_verdict
from engine.gguf.reader import read_gguf
from tests.fixtures import native
from tests.fixtures import step_flash as sf
from tests.sdist import read_sdist_member

GIB = 1 << 30
PUBLISHED_Q4_K_M = 116 * GIB  # AesSedai's Step-3.5-Flash Q4_K_M set (shared/REFERENCE.md section 1)
MODEL_CARD_PARAMS = 196.81e9  # "196.81B (196B backbone + 0.81B head)"
N_CTX = 32768
QT, LFT = sf.QT, sf.LFT


@pytest.fixture(scope="module")
def flash(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sf.write_set(tmp_path_factory.mktemp("step-flash"))


@pytest.fixture(scope="module")
def by_the_rules(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same set made by llama-quantize's own Q4_K_M rules (the MTP layers at Q8_0)."""
    return sf.write_set(tmp_path_factory.mktemp("step-flash-rules"), recipe=sf.Q4_K_M_RULES)


def test_the_set_is_laid_out_as_published_and_costs_little_disk(flash: list[Path]) -> None:
    assert [p.name for p in flash] == [f"Step-3.5-Flash-Q4_K_M-0000{k}-of-00003.gguf" for k in (1, 2, 3)]
    assert all(p.stat().st_size <= sf.PART_LIMIT + (16 << 20) for p in flash)  # gguf-split's 50G parts
    assert sum(p.stat().st_blocks * 512 for p in flash) < 64 << 20  # the data is a hole


def test_inspecting_the_set_takes_under_a_second(flash: list[Path]) -> None:
    """A guard against a pathological slowdown (the vocabulary and merge walks, three headers), not a target."""
    start = time.perf_counter()
    info = inspect_model(flash[0])
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"inspect_model took {elapsed:.2f} s"
    assert info.n_parts == 3 and info.n_vocab == 128_896 and info.architecture == "step35"


def test_parameters(flash: list[Path]) -> None:
    """199.4 B tensor elements: a 196.96 B trunk and three MTP layers of 0.81 B each.

    The model card's "196.81B (196B backbone + 0.81B head)" counts one MTP layer (each has its
    own 0.53 B output projection) and a backbone rounded down; the checkpoint, and every GGUF
    made from it, holds three MTP layers, so the file has 1.3 % more than the card's figure.
    """
    info = inspect_model(flash[0])
    decls = sf.tensors()
    assert info.n_params == sum(t.n_elements for t in decls)
    heads = [t for t in decls if sf.layer_of(t.name) >= sf.REAL.n_layer]
    per_head = sum(t.n_elements for t in heads) / sf.REAL.n_mtp
    trunk = info.n_params - 3 * per_head
    assert round(per_head / 1e9, 2) == 0.81
    assert 196e9 < trunk < 197e9
    assert info.n_params == pytest.approx(MODEL_CARD_PARAMS, rel=0.015)


def test_size_against_the_published_set(flash: list[Path]) -> None:
    """116.22 GiB, 0.2 % over the published 116 GiB: the card's own "116.22 GiB (5.01 BPW)"."""
    info = inspect_model(flash[0])
    assert 0 < info.file_bytes - info.weights_bytes < 16 << 20  # three headers and their padding
    assert info.weights_bytes / PUBLISHED_Q4_K_M == pytest.approx(1.0, abs=0.02)
    assert info.weights_bytes == 124_793_126_400
    assert round(info.weights_bytes / GIB, 2) == 116.22
    assert round(info.weights_bytes * 8 / info.n_params, 2) == 5.01


# The publisher's card: each set's size, its bits per weight and its mixture as default / ffn_up / ffn_gate /
# ffn_down, "with the MTP heads as Q8_0". The default is llama-quantize's type argument.
CARD = [
    ("Q8_0", 197.43, 8.51, sf.Recipe(LFT.MOSTLY_Q8_0)),
    ("Q5_K_M", 138.83, 5.98, sf.published_recipe(LFT.MOSTLY_Q8_0, QT.Q5_K, QT.Q5_K, QT.Q6_K)),
    ("Q4_K_M", 116.22, 5.01, sf.PUBLISHED),
    ("IQ4_XS", 91.31, 3.93, sf.published_recipe(LFT.MOSTLY_Q8_0, QT.IQ3_S, QT.IQ3_S, QT.IQ4_XS)),
    ("IQ3_S", 70.89, 3.05, sf.published_recipe(LFT.MOSTLY_Q6_K, QT.IQ2_S, QT.IQ2_S, QT.IQ3_S)),
    ("IQ2_S", 64.43, 2.78, sf.published_recipe(LFT.MOSTLY_Q6_K, QT.IQ2_XS, QT.IQ2_XS, QT.IQ3_XXS)),
]


@pytest.mark.parametrize(("gib", "bpw", "recipe"), [row[1:] for row in CARD], ids=[row[0] for row in CARD])
def test_the_recipe_gives_every_size_on_the_card(gib: float, bpw: float, recipe: sf.Recipe) -> None:
    """The recipe read off the card, with these shapes, gives each published size to the hundredth of a GiB.

    That pins the recipe as well as the shapes: the shared expert, the dense FFN, the embeddings and the
    output at the default type, not at the experts' (the Q4_K_M would be 115.94 GiB, the Q5_K_M 138.63),
    and the MTP layers at Q8_0 also where the default is Q6_K (IQ3_S and IQ2_S would be 0.55 GiB smaller).
    """
    types = recipe.types()
    decls = sf.tensors()
    total = sum(sf.n_bytes(t, types[t.name]) for t in decls)
    assert (round(total / GIB, 2), round(total * 8 / sum(t.n_elements for t in decls), 2)) == (gib, bpw)


def test_llama_quantizes_own_q4_k_m_rules_make_a_smaller_set(by_the_rules: list[Path]) -> None:
    """llama-quantize's own Q4_K_M rules (MTP layers Q8_0) make 112.47 GiB, 3.0 % under the published 116 GiB.

    The published set is not that mixture: its maker kept llama-quantize's default type at Q8_0 and
    overrode only the routed experts. Of the 3.75 GiB between them, the rules' Q4_K attention (Q6_K for
    half the attn_v) against Q8_0 is 2.08; the routed ffn_down at Q4_K in 24 of the 42 MoE layers and
    Q6_K in 18, against Q5_K in all, 0.86; the embeddings and output (Q4_K and Q6_K) 0.36, the shared
    expert 0.28 and the dense layers' FFN 0.16, all at Q8_0 in the published set. shared/REFERENCE.md's
    summary of the recipe, "Q8_0 attention / Q4_K gate+up / Q5_K down" on top of the rules, would make 115.4.
    """
    info = inspect_model(by_the_rules[0])
    assert [p.name for p in by_the_rules] == [f"Step-3.5-Flash-Q4_K_M-0000{k}-of-00003.gguf" for k in (1, 2, 3)]
    assert info.weights_bytes == 120_765_558_272
    assert round(info.weights_bytes / GIB, 2) == 112.47
    assert info.weights_bytes / PUBLISHED_Q4_K_M == pytest.approx(0.970, abs=0.001)
    assert info.quantization == "Q4_K_M (Q4_K / Q6_K / Q8_0)"
    assert [t for t, _ in info.quantization_types] == ["Q4_K", "Q6_K", "Q8_0", "F32"]

    rules, published = sf.published_types(recipe=sf.Q4_K_M_RULES), sf.published_types()

    def group(name: str) -> str:
        if sf.layer_of(name) >= sf.REAL.n_layer:
            return "mtp"
        return next((g for g in ("_exps", "_shexp", ".attn_", ".ffn_") if g in name), "embd+output")

    gap = Counter[str]()
    for t in sf.tensors():
        gap[group(t.name)] += sf.n_bytes(t, published[t.name]) - sf.n_bytes(t, rules[t.name])
    in_gib = {g: round(n / GIB, 2) for g, n in gap.items()}
    assert in_gib == {".attn_": 2.08, "_exps": 0.86, "embd+output": 0.36, "_shexp": 0.28, ".ffn_": 0.16, "mtp": 0}

    experts = sf.Recipe(LFT.MOSTLY_Q4_K_M, experts=(QT.Q4_K, QT.Q4_K, QT.Q5_K)).overrides()
    summary = [*experts, (r"\.attn_", QT.Q8_0), ("ffn_down_shexp", QT.Q5_K)]
    decls = sf.tensors()
    as_summarised = sf.quantize_types(
        decls, ftype=LFT.MOSTLY_Q4_K_M, n_layer_all=sf.REAL.n_layer_all, n_expert=sf.REAL.n_expert, overrides=summary
    )
    assert round(sum(sf.n_bytes(t, as_summarised[t.name]) for t in decls) / GIB, 1) == 115.4


def test_quantization_names_the_mixture(flash: list[Path]) -> None:
    """The label names the quantization the file names give, as users know it: the header declares Q8_0
    (llama-quantize's type argument, the default the publisher kept), which holds 8 % of the bytes."""
    info = inspect_model(flash[0])
    assert info.quantization == "Q4_K_M (Q4_K / Q5_K / Q8_0)"
    assert [t for t, _ in info.quantization_types] == ["Q4_K", "Q5_K", "Q8_0", "F32"]
    types = sf.published_types()
    by_type = Counter[str]()
    for t in sf.tensors():
        if len(t.ne) > 1:
            by_type[types[t.name].name] += sf.n_bytes(t, types[t.name])
    assert dict(info.quantization_types) == dict(by_type)
    assert {t: round(n / GIB, 2) for t, n in info.quantization_types} == {
        "Q4_K": 66.45,  # routed experts' gate and up
        "Q5_K": 40.61,  # routed experts' down
        "Q8_0": 8.99,  # everything else, the MTP layers included
        "F32": 0.18,  # the routers
    }


def test_the_mtp_heads_are_embedded_in_the_last_part(flash: list[Path]) -> None:
    info = inspect_model(flash[1])  # any part opens the set
    assert info.path == flash[0] and info.opened_part == 1
    assert info.mtp_weights == "embedded" and info.n_mtp_heads == 3
    held = [{t.name for t in read_gguf(p).tensors} for p in flash]
    head_tensors = {t.name for t in sf.tensors() if sf.layer_of(t.name) >= 45}
    assert len(head_tensors) == 3 * 17
    assert head_tensors <= held[-1] and not head_tensors & (held[0] | held[1])
    assert "blk.45.nextn.eh_proj.weight" in held[-1] and "blk.47.nextn.shared_head_head.weight" in held[-1]
    types = sf.published_types()
    assert {types[t] for t in head_tensors} == {QT.Q8_0, QT.F32}  # as the published sets ship them
    assert info.mtp_bytes == sum(sf.n_bytes(t, types[t.name]) for t in sf.tensors() if t.name in head_tensors)
    assert info.trunk_bytes + info.mtp_bytes == info.weights_bytes


def test_memory_at_32k_context(flash: list[Path]) -> None:
    info = inspect_model(flash[0])
    est = estimate_memory(info, N_CTX)
    assert est.weights == info.weights_bytes  # trunk and the three heads
    # By hand: f16 K and V of 8 heads x 128 per cell. The 12 full-attention trunk layers (0, 4, ..., 44)
    # keep n_ctx cells; the 33 sliding ones n_swa + n_ubatch = 1024 (llama_kv_cache_iswa, padded to 256).
    cell = 8 * (128 + 128) * 2
    full = sum(not sf.REAL.is_swa(il) for il in range(45))
    assert (full, 45 - full) == (12, 33)
    assert est.kv_cache == (full * N_CTX + (45 - full) * 1024) * cell == 1_749_024_768
    # The draft context caches the three (sliding) head layers, and has its own compute buffer.
    assert est.mtp_context > 3 * 1024 * cell
    assert est.compute < 512 << 20 and est.mtp_context < 256 << 20
    assert est.total == est.weights + est.kv_cache + est.compute + est.mtp_context
    assert 117 * GIB < est.total < 119 * GIB  # 116.2 GiB of weights, 1.6 GiB of KV cache, 0.3 GiB of buffers
    assert memory_verdict(est.total, 24 * GIB) == "wont_fit"  # this machine's size
    assert memory_verdict(est.total, 116 * GIB) == "wont_fit"  # not even in the published size


def test_verdict_on_this_machine(flash: list[Path]) -> None:
    total = estimate_memory(inspect_model(flash[0]), N_CTX).total
    free = free_memory_bytes()
    if free >= total:
        pytest.skip(f"this machine has {free / GIB:.0f} GiB free")
    assert memory_verdict(total, free) == "wont_fit"


# --- the port against llama-quantize ---

SMALL = sf.FlashShape(
    n_vocab=1024,
    n_embd=256,
    n_ff=256,
    n_expert=4,
    n_expert_used=2,
    n_ff_exp=256,
    n_ff_shexp=256,
    n_head=2,
    n_head_swa=3,  # 384-wide attn_output rows: Q4_K and Q6_K do not divide them, so they fall back
    n_head_kv=1,
    n_swa=64,
    context_length=4096,
)

COMMAND_LINES = {
    "q4_k_m": sf.Recipe(LFT.MOSTLY_Q4_K_M, mtp=None),
    "q4_k_m+mtp": sf.Q4_K_M_RULES,
    "published": sf.PUBLISHED,
    "q4_k_m+experts": sf.Recipe(LFT.MOSTLY_Q4_K_M, experts=(QT.Q4_K, QT.Q4_K, QT.Q5_K)),  # overrides over the rules
    "q6_k+experts": sf.published_recipe(LFT.MOSTLY_Q6_K, QT.Q4_K, QT.Q4_K, QT.Q5_K),  # the IQ3_S / IQ2_S default
}


@pytest.mark.parametrize("n_expert", [4, 8])  # 8 experts has rules of its own
@pytest.mark.parametrize("command_line", list(COMMAND_LINES))
def test_port_matches_llama_quantize(tmp_path: Path, n_expert: int, command_line: str) -> None:
    """A step35 model with the real layer layout (45 + 3, MoE from layer 3) and small widths, quantized
    by llama-quantize with the recipe's type argument and --tensor-type options."""
    recipe = COMMAND_LINES[command_line]
    s = replace(SMALL, n_expert=n_expert)
    src = sf.write_file(tmp_path / "f16.gguf", s, sf.source_types(s, QT.F16), 1)  # LLAMA_FTYPE_MOSTLY_F16
    out = tmp_path / "out.gguf"
    native.run_tool("LLAMA_QUANTIZE", *recipe.arguments(s), src, out, recipe.type_argument, "2")
    got = {t.name: t.type_name for t in read_gguf(out).tensors}
    predicted = recipe.types(s, float_type=QT.F16)
    assert got == {name: qtype.name for name, qtype in predicted.items()}

    kinds = set(got.values())
    for pattern, qtype in recipe.overrides(s):  # every override took (none of these rows needs a fallback)
        assert {got[name] for name in got if re.search(pattern, name)} - {"F32"} == {qtype.name}
    if recipe.ftype == LFT.MOSTLY_Q4_K_M:  # the rules' Q6_K, and the fallbacks of 384-wide rows
        assert {"Q4_K", "Q6_K", "F32"} <= kinds and ("Q5_1" if n_expert == 8 else "Q5_0") in kinds
    else:  # no rules of its own: the default type wherever no override matched, 8 experts' Q8_0 aside
        default = recipe.ftype.name.removeprefix("MOSTLY_")
        untouched = [name for name in got if not any(re.search(p, name) for p, _ in recipe.overrides(s))]
        assert {got[name] for name in untouched if predicted[name] != QT.F32} <= {default, "Q8_0"}
    assert ("Q8_0" in kinds) == (recipe.mtp is not None or n_expert == 8 or recipe.ftype == LFT.MOSTLY_Q8_0)


def test_q4_k_m_port_matches_llama_cpps_own_snapshot() -> None:
    """llama.cpp's test-quant-type-selection keeps, per model, the tensors whose type is not the default;
    its Step-3.5-Flash entry comes from ggml-org's GGUF, which has the 45 trunk layers only."""
    schema = read_sdist_member("vendor/llama.cpp/tests/snapshots/step-3.5-flash.schema")
    section = schema.split("[Q4_K_M] q4_K\n", 1)[1].split("\n[", 1)[0]
    listed = dict(line.split() for line in section.strip().splitlines())
    trunk = replace(sf.REAL, n_mtp=0)
    types = sf.Recipe(LFT.MOSTLY_Q4_K_M, mtp=None).types(trunk)
    quantized = {name: qtype for name, qtype in types.items() if qtype not in (QT.F32, QT.BF16)}
    assert len(quantized) == 3 * 8 + 42 * 11 + 2  # per layer: q k v output gate, FFN or experts + shared; embd, output
    assert {name: qtype.name for name, qtype in quantized.items() if qtype != QT.Q4_K} == {
        name: qtype.upper() for name, qtype in listed.items()
    }


_DRY_RUN_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(\S+)\s+- \[.*\], type =\s+(\w+), size = .*?(?:\((\w+)\))?$")


@pytest.mark.parametrize("recipe", [sf.PUBLISHED, sf.Q4_K_M_RULES], ids=["published", "q4_k_m_rules"])
def test_full_size_types_and_total_match_llama_quantize(tmp_path: Path, recipe: sf.Recipe) -> None:
    """llama-quantize --dry-run on the full-size model as the converter writes it (BF16, header only),
    with the recipe's command line: every tensor's type and the total size agree with the fixture's."""
    src = sf.write_file(tmp_path / "bf16.gguf", sf.REAL, sf.source_types(sf.REAL, QT.BF16), 32)  # MOSTLY_BF16
    log = native.run_tool("LLAMA_QUANTIZE", "--dry-run", *recipe.arguments(), src, recipe.type_argument)
    chosen = {}
    for line in log.splitlines():
        if m := _DRY_RUN_LINE.match(line):
            chosen[m.group(1)] = (m.group(3) or m.group(2)).upper()
    expected = sf.published_types(recipe=recipe)
    assert chosen == {name: qtype.name for name, qtype in expected.items()}
    quant_mib = float(re.search(r"quant size\s+=\s+([\d.]+) MiB", log).group(1))  # type: ignore[union-attr]
    total = sum(sf.n_bytes(t, expected[t.name]) for t in sf.tensors())
    assert quant_mib == pytest.approx(total / (1 << 20), abs=0.01)
