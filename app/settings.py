"""The user's settings: a typed dataclass, its valid ranges, and a versioned TOML file.

No Qt here. The file lives under platformdirs' user config folder and is written
atomically, so a crash or a full disk never leaves half a file behind. A file that
cannot be used (corrupt, wrong types, out-of-range values, written by a newer Stride)
is copied aside before Stride falls back to defaults, and the user is told where.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import platformdirs
import tomli_w

from engine.api import AUTO, DRAFT_SAMPLING, KV_TYPES, DraftSampling, GenerationParams, LoadOptions, SamplerParams

SETTINGS_VERSION = 3  # 2: Auto became the default MTP depth; 3: the Server panel's fields
SEED_MAX = 2**32 - 2  # 2**32 - 1 is llama.cpp's own "random seed" marker
RECENT_MODELS_MAX = 10


@dataclass
class Settings:
    version: int = SETTINGS_VERSION
    # Generation: applies to the next reply, no reload.
    mtp_depth: int | str = AUTO  # "auto" (plain or dynamic drafting, whichever is faster here), 0 = off, 1-3
    p_min: float = 0.0
    draft_sampling: str = "greedy"  # or "probabilistic" (rejection sampling, temperature > 0)
    temperature: float = 0.7  # 0 = greedy
    top_k: int = 40  # 0 = off
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int = -1  # -1 = a fresh random seed for each reply
    max_tokens: int = 4096
    system_prompt: str = ""  # default system prompt for new conversations
    reasoning_effort: str = "medium"  # Step 3.7 Flash
    context_overflow: str = "stop"
    # Model: changing any of these reloads the model (see RELOAD_FIELDS).
    model_path: str = ""  # "" = none chosen; "demo" = the built-in demo model
    mtp_model_path: str = ""  # "" = heads inside the model file, if any
    projector_path: str = ""  # the vision file (mmproj) for pictures; "" = an mmproj*.gguf beside the model, if any
    n_ctx: int = 8192
    kv_type: str = "f16"
    threads: int = 0  # 0 = all cores
    gpu_layers: int = 0
    # App.
    recent_models: list[str] = field(default_factory=list)  # newest first
    tint_drafts: bool = False
    theme: str = "system"
    # Server panel: serve the loaded model to other apps (OpenAI-compatible API).
    server_enabled: bool = False  # on at the next start too
    server_host: str = "127.0.0.1"  # only this computer; another address needs server_api_key
    server_port: int = 8080
    server_api_key: str = ""  # "" = none

    def generation_params(self) -> GenerationParams:
        # A concrete seed even when "random", so a reply's seed can be reported and replayed.
        seed = random.randrange(SEED_MAX + 1) if self.seed == -1 else self.seed
        sampler = SamplerParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=seed,
        )
        return GenerationParams(
            max_tokens=self.max_tokens,
            sampler=sampler,
            mtp_depth=self.mtp_depth,
            p_min=self.p_min,
            draft_sampling=cast(DraftSampling, self.draft_sampling),  # validated against DRAFT_SAMPLING
        )

    def load_options(self) -> LoadOptions:
        return LoadOptions(n_ctx=self.n_ctx, n_threads=self.threads, n_gpu_layers=self.gpu_layers, kv_type=self.kv_type)

    def needs_reload(self, other: Settings) -> bool:
        return any(getattr(self, name) != getattr(other, name) for name in RELOAD_FIELDS)


RELOAD_FIELDS = ("model_path", "mtp_model_path", "projector_path", "n_ctx", "kv_type", "threads", "gpu_layers")

# Inclusive bounds for numeric settings; the settings dialog builds its spin boxes from these too.
RANGES: dict[str, tuple[float, float]] = {
    "mtp_depth": (0, 3),
    "p_min": (0.0, 1.0),
    "temperature": (0.0, 5.0),
    "top_k": (0, 1000),
    "top_p": (0.0, 1.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.5, 3.0),
    "seed": (-1, SEED_MAX),
    "max_tokens": (1, 131072),
    "n_ctx": (256, 1048576),
    "threads": (0, 512),
    "gpu_layers": (0, 999),
    "server_port": (1, 65535),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "draft_sampling": DRAFT_SAMPLING,
    "reasoning_effort": ("low", "medium", "high"),
    "context_overflow": ("stop", "drop_oldest"),
    "kv_type": tuple(KV_TYPES),
    "theme": ("system", "light", "dark"),
}

# Names users see in messages about their settings file.
LABELS: dict[str, str] = {
    "mtp_depth": "MTP depth",
    "p_min": "Draft threshold (p_min)",
    "draft_sampling": "Draft sampling",
    "temperature": "Temperature",
    "top_k": "Top-k",
    "top_p": "Top-p",
    "min_p": "Min-p",
    "repeat_penalty": "Repeat penalty",
    "seed": "Seed (-1 = random)",
    "max_tokens": "Max tokens",
    "system_prompt": "System prompt",
    "reasoning_effort": "Reasoning effort",
    "context_overflow": "Context overflow",
    "model_path": "Model file",
    "mtp_model_path": "MTP file",
    "projector_path": "Vision file",
    "n_ctx": "Context size",
    "kv_type": "KV-cache type",
    "threads": "Threads",
    "gpu_layers": "GPU layers",
    "recent_models": "Recent models",
    "tint_drafts": "Tint drafted tokens",
    "theme": "Theme",
    "server_enabled": "Server on",
    "server_host": "Server host",
    "server_port": "Server port",
    "server_api_key": "Server API key",
}

_DEFAULTS = Settings()
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list of file paths"}


class SettingsError(Exception):
    """The settings file could not be written (the message is one line naming the path and why)."""


@dataclass
class LoadResult:
    settings: Settings
    message: str | None  # for the user when the file could not be used as it was, else None


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) else str(value)


def _type_ok(kind: type, value: object) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # bool is an int subclass, but `top_k = true` is a mistake
        return False
    if kind is float:  # `temperature = 1` is a fine float
        return isinstance(value, int | float)
    if kind is list:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, kind)


def _problem(name: str, value: object) -> str | None:
    """Why `value` is not acceptable for setting `name`, or None when it is."""
    label = LABELS[name]
    if name == "mtp_depth" and value == AUTO:
        return None
    kind = int if name == "mtp_depth" else type(getattr(_DEFAULTS, name))  # Auto aside, a depth 0-3
    if not _type_ok(kind, value):
        return f"{label} must be {_KINDS[kind]} (got {_show(value)})"
    if name in RANGES:
        lo, hi = RANGES[name]
        assert isinstance(value, int | float)
        if not lo <= value <= hi:  # also catches TOML's nan
            return f"{label} must be between {_show(lo)} and {_show(hi)} (got {_show(value)})"
    if name in CHOICES and value not in CHOICES[name]:
        return f"{label} must be one of {', '.join(CHOICES[name])} (got {_show(value)})"
    if isinstance(value, list) and len(value) > RECENT_MODELS_MAX:
        return f"{label} can hold at most {RECENT_MODELS_MAX} files (got {len(value)})"
    return None


def validate(settings: Settings) -> list[str]:
    """A message for every setting that is of the wrong type or out of range; [] when all are fine."""
    problems = (_problem(f.name, getattr(settings, f.name)) for f in fields(Settings) if f.name != "version")
    return [p for p in problems if p]


def settings_path() -> Path:
    return Path(platformdirs.user_config_dir("Stride", appauthor=False)) / "settings.toml"


def _migrate(data: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring a file written at an older settings version up to SETTINGS_VERSION."""
    if version < 2 and data.get("mtp_depth") == 3:
        # Depth 3 was version 1's default, saved with every file: users who never chose it get Auto,
        # which drafts as deep as pays and runs plainly where drafting is slower.
        data = {**data, "mtp_depth": AUTO}
    # 3 only added fields (the Server panel's), whose defaults serve nothing until the user says so.
    return {**data, "version": SETTINGS_VERSION}


def _backup(path: Path) -> str:
    """Copy an unusable settings file aside; the sentence that tells the user where it went."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():  # two bad loads in one second must not overwrite the first copy
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    try:
        shutil.copy2(path, backup)
    except OSError as e:
        return f"The old file could not be backed up ({e.strerror or e})."
    return f"A copy of the old file is at {backup}."


def _unusable(path: Path, problem: str) -> LoadResult:
    return LoadResult(Settings(), f"The settings file {path} {problem}; using defaults. {_backup(path)}")


def load_settings(path: Path | None = None) -> LoadResult:
    path = path or settings_path()
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return LoadResult(Settings(), None)
    except OSError as e:
        return _unusable(path, f"could not be read ({e.strerror or e})")
    except UnicodeDecodeError:
        return _unusable(path, "is not UTF-8 text")
    except tomllib.TOMLDecodeError as e:
        return _unusable(path, f"is not valid TOML ({e})")

    # A file without a version was written by hand: read it as the current version.
    version = data.get("version", SETTINGS_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return _unusable(path, f"has an invalid version ({_show(version)})")
    if version > SETTINGS_VERSION:
        return _unusable(
            path, f"is from a newer Stride (settings version {version}; this one reads up to {SETTINGS_VERSION})"
        )

    data = _migrate(data, version)
    values: dict[str, Any] = {}
    problems: list[str] = []
    # Only known keys are read: missing ones keep their defaults, unknown ones are ignored.
    for f in fields(Settings):
        if f.name == "version" or f.name not in data:
            continue
        value = data[f.name]
        problem = _problem(f.name, value)
        if problem:
            problems.append(problem)
        else:
            values[f.name] = float(value) if isinstance(getattr(_DEFAULTS, f.name), float) else value
    settings = Settings(**values)
    if not problems:
        return LoadResult(settings, None)
    return LoadResult(
        settings,
        f"Some settings in {path} were reset to their defaults: {'; '.join(problems)}. {_backup(path)}",
    )


def save_settings(settings: Settings, path: Path | None = None) -> None:
    """Write atomically: readers see the old file or the new one, never a partial write."""
    path = path or settings_path()
    text = tomli_w.dumps(asdict(settings))
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise SettingsError(f"Could not save settings to {path}: {e.strerror or e}") from e
