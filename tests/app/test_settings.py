"""Settings: the file (round trip, atomic writes, damaged or newer files) and the settings dialog."""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QDialogButtonBox,
    QFileDialog,
    QLineEdit,
    QPlainTextEdit,
    QWidget,
)
from pytestqt.qtbot import QtBot

from app.settings import (
    CHOICES,
    LABELS,
    RANGES,
    SETTINGS_VERSION,
    LoadResult,
    Settings,
    SettingsError,
    load_settings,
    save_settings,
    settings_path,
    validate,
)
from app.views import settings_dialog
from app.views.settings_dialog import SettingsDialog
from engine.api import AUTO

CUSTOM = Settings(
    mtp_depth=1,
    p_min=0.25,
    temperature=1.3,
    top_k=0,
    top_p=0.8,
    min_p=0.0,
    repeat_penalty=1.15,
    seed=4_000_000_000,  # above a C int: the dialog's seed box must still hold it
    max_tokens=777,
    system_prompt="Be brief.\nAnswer in French.",
    reasoning_effort="high",
    context_overflow="drop_oldest",
    model_path="/models/step-3.7-flash-q4.gguf",
    mtp_model_path="/models/step-3.7-flash-mtp.gguf",
    projector_path="/models/mmproj-step-3.7-flash.gguf",
    n_ctx=32768,
    kv_type="q8_0",
    threads=6,
    gpu_layers=20,
    recent_models=["/models/step-3.7-flash-q4.gguf", "/models/older.gguf"],
    tint_drafts=True,
    theme="dark",
)


def write(path: Path, data: dict[str, object]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


def backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("settings.toml.bak-*"))


def assert_backed_up(result: LoadResult, path: Path, original: bytes) -> None:
    [backup] = backups(path.parent)
    assert backup.read_bytes() == original
    assert result.message is not None
    assert str(backup) in result.message


# The file ---------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    assert validate(Settings()) == []
    assert validate(CUSTOM) == []


def test_settings_path_is_under_the_sandboxed_config_folder() -> None:
    # tests/conftest.py points XDG_CONFIG_HOME at a temporary folder; the real config is never touched.
    assert settings_path().name == "settings.toml"
    assert settings_path().is_relative_to(os.environ["XDG_CONFIG_HOME"])


def test_missing_file_gives_defaults_without_a_message(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "settings.toml") == LoadResult(Settings(), None)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deeper" / "settings.toml"  # the folder is created on first save
    save_settings(CUSTOM, path)
    assert load_settings(path) == LoadResult(CUSTOM, None)
    assert f"version = {SETTINGS_VERSION}" in path.read_text(encoding="utf-8")


def _valid_settings() -> st.SearchStrategy[Settings]:
    """Any settings `validate` accepts, built from the same ranges and choices it checks."""
    values: dict[str, st.SearchStrategy[object]] = {}
    for f in fields(Settings):
        default = getattr(Settings(), f.name)
        if f.name in RANGES:
            lo, hi = RANGES[f.name]
            values[f.name] = st.floats(lo, hi) if isinstance(default, float) else st.integers(int(lo), int(hi))
            if f.name == "mtp_depth":
                values[f.name] = values[f.name] | st.just(AUTO)
        elif f.name in CHOICES:
            values[f.name] = st.sampled_from(CHOICES[f.name])
    return st.builds(
        Settings,
        **values,
        system_prompt=st.text(),
        model_path=st.text(),
        mtp_model_path=st.text(),
        projector_path=st.text(),
        recent_models=st.lists(st.text(), max_size=10),
        tint_drafts=st.booleans(),
    )


@given(_valid_settings())
@hypothesis_settings(max_examples=60, deadline=None)
def test_any_valid_settings_round_trip(s: Settings) -> None:
    assert validate(s) == []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "settings.toml"
        save_settings(s, path)
        assert load_settings(path) == LoadResult(s, None)


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    save_settings(Settings(), path)
    save_settings(CUSTOM, path)
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


def test_save_into_an_unusable_folder_raises_one_line_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "config"
    blocker.write_text("a file where the folder should be", encoding="utf-8")
    path = blocker / "settings.toml"
    with pytest.raises(SettingsError) as caught:
        save_settings(CUSTOM, path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    assert blocker.read_text(encoding="utf-8") == "a file where the folder should be"


def test_a_failing_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.toml"
    save_settings(CUSTOM, path)
    before = path.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SettingsError, match="No space left on device"):
        save_settings(Settings(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["settings.toml"]


def test_corrupt_toml_is_backed_up_and_defaults_are_used(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('temperature = 0.3\nmodel_path = "unterminated\n', encoding="utf-8")
    original = path.read_bytes()
    result = load_settings(path)
    assert result.settings == Settings()
    assert_backed_up(result, path, original)
    assert result.message is not None and "not valid TOML" in result.message
    assert path.read_bytes() == original  # the file itself is left for the next save to replace


def test_non_utf8_file_is_backed_up(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_bytes(b"theme = '\xff\xfe'\n")
    result = load_settings(path)
    assert result.settings == Settings()
    assert_backed_up(result, path, b"theme = '\xff\xfe'\n")


def test_wrong_types_reset_only_those_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "settings.toml",
        {
            "version": 1,
            "temperature": "hot",
            "top_k": True,  # a bool is not a whole number here
            "seed": 1.5,
            "tint_drafts": "yes",
            "recent_models": ["/a.gguf", 3],
            "theme": "dark",
            "max_tokens": 100,
        },
    )
    original = path.read_bytes()
    result = load_settings(path)
    assert result.settings == Settings(theme="dark", max_tokens=100)
    assert_backed_up(result, path, original)
    assert result.message is not None
    for text in ("Temperature must be a number (got 'hot')", "Top-k", "Seed", "Tint drafted tokens", "Recent models"):
        assert text in result.message


def test_whole_numbers_are_accepted_for_float_settings(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", {"temperature": 1, "repeat_penalty": 2})
    result = load_settings(path)
    assert result == LoadResult(Settings(temperature=1.0, repeat_penalty=2.0), None)
    assert isinstance(result.settings.temperature, float)


def test_out_of_range_values_reset_those_keys_and_keep_the_rest(tmp_path: Path) -> None:
    path = write(
        tmp_path / "settings.toml",
        {
            "version": 1,
            "temperature": 9,
            "n_ctx": 100,
            "seed": -2,
            "kv_type": "q3_k",
            "theme": "purple",
            "recent_models": [f"/m{i}.gguf" for i in range(11)],
            "top_p": 0.5,
            "model_path": "/models/x.gguf",
            "mtp_depth": 2,
        },
    )
    original = path.read_bytes()
    result = load_settings(path)
    assert result.settings == Settings(top_p=0.5, model_path="/models/x.gguf", mtp_depth=2)
    assert_backed_up(result, path, original)
    message = result.message
    assert message is not None
    assert "Temperature must be between 0 and 5 (got 9)" in message
    assert "Context size must be between 256 and 1048576 (got 100)" in message
    assert "Seed (-1 = random) must be between -1 and 4294967294 (got -2)" in message
    assert "KV-cache type must be one of" in message and "'q3_k'" in message
    assert "Theme must be one of system, light, dark (got 'purple')" in message
    assert "Recent models can hold at most 10 files (got 11)" in message


def test_nan_is_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("p_min = nan\n", encoding="utf-8")
    result = load_settings(path)
    assert result.settings == Settings()
    assert result.message is not None and "got nan" in result.message


def test_newer_version_is_backed_up_and_defaults_are_used(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", {"version": SETTINGS_VERSION + 1, "temperature": 0.2})
    original = path.read_bytes()
    result = load_settings(path)
    assert result.settings == Settings()
    assert_backed_up(result, path, original)
    assert result.message is not None and "newer" in result.message


@pytest.mark.parametrize("version", [0, "1", True])
def test_invalid_version_is_backed_up_and_defaults_are_used(tmp_path: Path, version: object) -> None:
    path = write(tmp_path / "settings.toml", {"version": version, "temperature": 0.2})
    result = load_settings(path)
    assert result.settings == Settings()
    assert_backed_up(result, path, path.read_bytes())


def test_two_bad_loads_keep_both_backups(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text("[[[", encoding="utf-8")
    load_settings(path)
    path.write_text("]]]", encoding="utf-8")
    load_settings(path)
    assert sorted(p.read_text(encoding="utf-8") for p in backups(tmp_path)) == ["[[[", "]]]"]


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", {"version": 1, "future_option": {"x": 1}, "temperature": 0.2})
    assert load_settings(path) == LoadResult(Settings(temperature=0.2), None)
    assert backups(tmp_path) == []


def test_a_file_without_a_version_is_read_as_current(tmp_path: Path) -> None:
    path = write(tmp_path / "settings.toml", {"top_k": 5})
    assert load_settings(path) == LoadResult(Settings(top_k=5), None)


def test_validate_reports_wrong_values() -> None:
    problems = validate(Settings(temperature=9.0, context_overflow="wrap", threads=-1))
    assert problems == [
        "Temperature must be between 0 and 5 (got 9)",
        "Context overflow must be one of stop, drop_oldest (got 'wrap')",
        "Threads must be between 0 and 512 (got -1)",
    ]


# Mapping to the engine -------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["model_path", "mtp_model_path", "projector_path", "n_ctx", "kv_type", "threads", "gpu_layers"]
)
def test_model_settings_need_a_reload(name: str) -> None:
    changed = {f.name: getattr(CUSTOM, f.name) for f in fields(Settings) if f.name == name}
    assert Settings().needs_reload(Settings(**changed))


def test_generation_and_app_settings_do_not_need_a_reload() -> None:
    model_fields = ("model_path", "mtp_model_path", "projector_path", "n_ctx", "kv_type", "threads", "gpu_layers")
    other = {k: v for k, v in asdict(CUSTOM).items() if k not in model_fields}
    assert not Settings().needs_reload(Settings(**other))


def test_generation_params_mapping() -> None:
    params = CUSTOM.generation_params()
    assert params.max_tokens == 777
    assert params.mtp_depth == 1
    assert params.p_min == 0.25
    s = params.sampler
    assert (s.temperature, s.top_k, s.top_p, s.min_p, s.repeat_penalty, s.seed) == (
        1.3,
        0,
        0.8,
        0.0,
        1.15,
        4_000_000_000,
    )


def test_depth_zero_turns_mtp_off() -> None:
    assert Settings(mtp_depth=0).generation_params().mtp_depth == 0


def test_auto_depth_and_probabilistic_drafting_round_trip(tmp_path: Path, qtbot: QtBot) -> None:
    chosen = Settings(mtp_depth=AUTO, draft_sampling="probabilistic")
    assert validate(chosen) == []
    params = chosen.generation_params()
    assert (params.mtp_depth, params.draft_sampling) == (AUTO, "probabilistic")
    path = tmp_path / "settings.toml"
    save_settings(chosen, path)
    assert load_settings(path) == LoadResult(chosen, None)
    d = SettingsDialog(chosen)
    qtbot.addWidget(d)
    assert d.mtp_depth.currentText() == "Auto"
    assert d.result_settings() == chosen


@pytest.mark.parametrize(("name", "value"), [("mtp_depth", "fast"), ("mtp_depth", 4), ("draft_sampling", "wild")])
def test_bad_depth_or_draft_sampling_is_named(name: str, value: object) -> None:
    problems = validate(replace(Settings(), **{name: value}))  # type: ignore[arg-type]
    assert len(problems) == 1 and LABELS[name] in problems[0]


def test_random_seed_is_fresh_for_each_reply() -> None:
    seeds = {Settings(seed=-1).generation_params().sampler.seed for _ in range(3)}
    assert len(seeds) > 1
    assert all(0 <= seed <= RANGES["seed"][1] for seed in seeds)


def test_load_options_mapping() -> None:
    options = CUSTOM.load_options()
    assert (options.n_ctx, options.n_threads, options.n_gpu_layers, options.kv_type) == (32768, 6, 20, "q8_0")


# The dialog ------------------------------------------------------------------------


@pytest.fixture
def dialog(qtbot: QtBot) -> SettingsDialog:
    d = SettingsDialog(CUSTOM)
    qtbot.addWidget(d)
    return d


def test_dialog_choices_cover_every_valid_value() -> None:
    def values(options: tuple[tuple[str, object], ...]) -> set[object]:
        return {value for _, value in options}

    assert values(settings_dialog.DEPTHS) == {*range(int(RANGES["mtp_depth"][1]) + 1), AUTO}
    assert values(settings_dialog.DRAFT_SAMPLINGS) == set(CHOICES["draft_sampling"])
    assert values(settings_dialog.EFFORTS) == set(CHOICES["reasoning_effort"])
    assert values(settings_dialog.OVERFLOWS) == set(CHOICES["context_overflow"])
    assert values(settings_dialog.THEMES) == set(CHOICES["theme"])
    assert values(settings_dialog.KV_TYPES_SHOWN) == set(CHOICES["kv_type"])


def test_dialog_shows_the_values_it_was_given(dialog: SettingsDialog) -> None:
    assert dialog.mtp_depth.currentText() == "1"
    assert dialog.temperature.value() == 1.3
    assert dialog.top_k.text() == "Off"
    assert not dialog.random_seed.isChecked()
    assert dialog.seed.value() == 4_000_000_000
    assert dialog.system_prompt.toPlainText() == "Be brief.\nAnswer in French."
    assert dialog.model_path.currentText() == "/models/step-3.7-flash-q4.gguf"
    assert dialog.mtp_model_path.text() == "/models/step-3.7-flash-mtp.gguf"
    assert dialog.kv_type.currentData() == "q8_0"
    assert dialog.theme.currentText() == "Dark"
    assert dialog.tint_drafts.isChecked()
    # Nothing edited: the same settings come back.
    assert dialog.result_settings() == CUSTOM


def test_dialog_returns_edited_values_without_touching_its_input(qtbot: QtBot) -> None:
    given = Settings(recent_models=["/models/a.gguf"])
    dialog = SettingsDialog(given)
    qtbot.addWidget(dialog)
    assert dialog.threads.text() == "Auto"
    assert dialog.random_seed.isChecked() and not dialog.seed.isEnabled()

    dialog.mtp_depth.setCurrentIndex(0)
    dialog.p_min.setValue(0.4)
    dialog.temperature.setValue(0.0)
    dialog.top_k.setValue(12)
    dialog.random_seed.setChecked(False)
    dialog.seed.setValue(42)
    dialog.max_tokens.setValue(99)
    dialog.system_prompt.setPlainText("Hi")
    dialog.reasoning_effort.setCurrentIndex(dialog.reasoning_effort.findData("low"))
    dialog.context_overflow.setCurrentIndex(dialog.context_overflow.findData("drop_oldest"))
    dialog.model_path.setCurrentIndex(dialog.model_path.findText("/models/a.gguf"))
    dialog.mtp_model_path.setText("/models/mtp.gguf")
    dialog.n_ctx.setValue(4096)
    dialog.kv_type.setCurrentIndex(dialog.kv_type.findData("q4_0"))
    dialog.threads.setValue(3)
    dialog.gpu_layers.setValue(999)
    dialog.theme.setCurrentIndex(dialog.theme.findData("light"))
    dialog.tint_drafts.setChecked(True)
    dialog.button_box.button(QDialogButtonBox.StandardButton.Ok).click()

    assert dialog.result() == SettingsDialog.DialogCode.Accepted
    result = dialog.result_settings()
    assert result == Settings(
        mtp_depth=0,
        p_min=0.4,
        temperature=0.0,
        top_k=12,
        seed=42,
        max_tokens=99,
        system_prompt="Hi",
        reasoning_effort="low",
        context_overflow="drop_oldest",
        model_path="/models/a.gguf",
        mtp_model_path="/models/mtp.gguf",
        n_ctx=4096,
        kv_type="q4_0",
        threads=3,
        gpu_layers=999,
        recent_models=["/models/a.gguf"],
        tint_drafts=True,
        theme="light",
    )
    assert validate(result) == []
    assert given == Settings(recent_models=["/models/a.gguf"])
    result.recent_models.append("/models/b.gguf")
    assert given.recent_models == ["/models/a.gguf"]
    assert result.needs_reload(given)


def test_spin_boxes_keep_values_in_range(dialog: SettingsDialog) -> None:
    dialog.temperature.setValue(9.0)
    dialog.n_ctx.setValue(10)
    dialog.seed.setValue(2**40)
    result = dialog.result_settings()
    assert (result.temperature, result.n_ctx, result.seed) == (5.0, 256, 2**32 - 2)
    assert validate(result) == []


def test_clear_empties_the_mtp_file(dialog: SettingsDialog) -> None:
    assert dialog.mtp_clear.isEnabled()
    dialog.mtp_clear.click()
    assert dialog.result_settings().mtp_model_path == ""
    assert not dialog.mtp_clear.isEnabled()


def test_browse_fills_in_the_chosen_file(dialog: SettingsDialog, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def choose(parent: QWidget, title: str, start: str, filters: str) -> tuple[str, str]:
        asked.append(start)
        return "/elsewhere/picked.gguf", filters

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(choose))
    dialog.model_browse.click()
    dialog.mtp_browse.click()
    dialog.projector_browse.click()
    assert asked == ["/models", "/models", "/models"]
    result = dialog.result_settings()
    picked = "/elsewhere/picked.gguf"
    assert (result.model_path, result.mtp_model_path, result.projector_path) == (picked, picked, picked)


def test_restore_defaults_keeps_the_model_files(dialog: SettingsDialog) -> None:
    dialog.button_box.button(QDialogButtonBox.StandardButton.RestoreDefaults).click()
    assert dialog.random_seed.isChecked() and not dialog.seed.isEnabled()
    expected = Settings(
        model_path=CUSTOM.model_path,
        mtp_model_path=CUSTOM.mtp_model_path,
        projector_path=CUSTOM.projector_path,
        recent_models=CUSTOM.recent_models,
    )
    assert dialog.result_settings() == expected


def test_cancel_rejects(dialog: SettingsDialog) -> None:
    dialog.temperature.setValue(0.1)
    dialog.button_box.button(QDialogButtonBox.StandardButton.Cancel).click()
    assert dialog.result() == SettingsDialog.DialogCode.Rejected


def test_every_control_has_an_accessible_name_and_a_tooltip(dialog: SettingsDialog) -> None:
    inputs = (QAbstractSpinBox, QComboBox, QLineEdit, QPlainTextEdit, QAbstractButton)
    controls = [w for w in dialog.findChildren(QWidget) if isinstance(w, inputs)]
    # A spin box's own line edit is part of the spin box, which carries the name.
    controls = [w for w in controls if not isinstance(w.parentWidget(), QAbstractSpinBox)]
    assert len(controls) >= 25
    unnamed = [f"{type(w).__name__} {w.objectName()!r}" for w in controls if not w.accessibleName()]
    untipped = [w.accessibleName() for w in controls if not w.toolTip()]
    assert unnamed == []
    assert untipped == []


SHOT_MODEL = "/home/you/models/Step-3.7-Flash-Q4_K_M-00001-of-00003.gguf"


def test_screenshot(qtbot: QtBot, screenshot_dir: Path) -> None:
    """Saves docs/screenshots/settings.png; look at it after changing the layout.

    The defaults, as a new user first sees them (with a model chosen), not the test values above."""
    shown = Settings(model_path=SHOT_MODEL, recent_models=[SHOT_MODEL])
    dialog = SettingsDialog(shown)
    qtbot.addWidget(dialog)
    assert dialog.result_settings() == shown
    dialog.show()
    qtbot.waitExposed(dialog)
    # Every label must fit: the dialog's layout never squeezes a control below its size hint.
    assert dialog.width() >= dialog.minimumSizeHint().width()
    assert dialog.width() <= 1280 and dialog.height() <= 700, "it must fit on a small laptop screen"
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    assert dialog.grab().save(str(screenshot_dir / "settings.png"))


@pytest.mark.parametrize(("saved", "read"), [(3, AUTO), (2, 2), (0, 0), (AUTO, AUTO)])
def test_version_1_files_move_from_the_old_default_depth_3_to_auto(tmp_path: Path, saved: object, read: object) -> None:
    """Depth 3 was the default every version-1 file saved; other choices were the user's and stay."""
    path = write(tmp_path / "settings.toml", {"version": 1, "mtp_depth": saved, "temperature": 0.3})
    result = load_settings(path)
    assert result.message is None and result.settings.mtp_depth == read and result.settings.temperature == 0.3
    assert Settings().mtp_depth == AUTO


def test_version_2_files_read_with_the_server_off_on_127_0_0_1(tmp_path: Path) -> None:
    """Version 3 added the Server panel's fields: an older file serves nothing until the user says so."""
    path = write(tmp_path / "settings.toml", {"version": 2, "mtp_depth": 2, "temperature": 0.3})
    result = load_settings(path)
    assert result.message is None and result.settings.mtp_depth == 2
    s = result.settings
    assert (s.server_enabled, s.server_host, s.server_port, s.server_api_key) == (False, "127.0.0.1", 8080, "")
    save_settings(s, path)
    assert f"version = {SETTINGS_VERSION}" in path.read_text(encoding="utf-8") and SETTINGS_VERSION == 3


@pytest.mark.parametrize("port", [0, 65536, "8080"])
def test_a_server_port_out_of_range_is_reset_and_named(tmp_path: Path, port: object) -> None:
    result = load_settings(write(tmp_path / "settings.toml", {"server_port": port, "temperature": 0.3}))
    assert result.settings.server_port == 8080 and result.settings.temperature == 0.3
    assert result.message is not None and "Server port must be" in result.message
