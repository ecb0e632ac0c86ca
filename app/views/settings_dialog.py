"""The settings dialog: every setting, grouped the way desktop LLM apps group them.

It edits a copy of the settings it is given; the caller reads `result_settings()` after
the dialog is accepted and decides what to apply (a model reload is the caller's to ask
about). Spin box ranges come from `app.settings.RANGES`, so the dialog cannot produce a
value that `validate` rejects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from PySide6.QtCore import Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.settings import RANGES, SEED_MAX, Settings
from engine.api import AUTO, DEMO_NAME

# (shown text, stored value) for every choice; the one place each mapping lives.
DEPTHS: tuple[tuple[str, int | str], ...] = (("Off", 0), ("1", 1), ("2", 2), ("3", 3), ("Auto", AUTO))
DRAFT_SAMPLINGS: tuple[tuple[str, str], ...] = (
    ("Greedy (same text at every depth)", "greedy"),
    ("Probabilistic (more accepted when temperature > 0)", "probabilistic"),
)
EFFORTS: tuple[tuple[str, str], ...] = (("Low", "low"), ("Medium", "medium"), ("High", "high"))
OVERFLOWS: tuple[tuple[str, str], ...] = (("Stop and say so", "stop"), ("Drop the oldest turns", "drop_oldest"))
THEMES: tuple[tuple[str, str], ...] = (("System", "system"), ("Light", "light"), ("Dark", "dark"))
KV_TYPES_SHOWN: tuple[tuple[str, str], ...] = (
    ("f16 (default)", "f16"),
    ("bf16", "bf16"),
    ("f32 (most memory)", "f32"),
    ("q8_0 (half the memory)", "q8_0"),
    ("q4_0 (quarter of the memory)", "q4_0"),
)
GGUF_FILTER = "GGUF models (*.gguf);;All files (*)"

W = TypeVar("W", bound=QWidget)


def _described(widget: W, name: str, tip: str) -> W:
    """Give a control the name screen readers announce and a tooltip in plain words."""
    widget.setAccessibleName(name)
    widget.setToolTip(tip)
    return widget


def _choices(options: Sequence[tuple[str, object]]) -> QComboBox:
    combo = QComboBox()
    for text, value in options:
        combo.addItem(text, value)
    return combo


def _select(combo: QComboBox, value: object) -> None:
    combo.setCurrentIndex(max(combo.findData(value), 0))


def _int_spin(name: str, *, step: int = 1, special: str = "", suffix: str = "") -> QSpinBox:
    spin = QSpinBox()
    lo, hi = RANGES[name]
    spin.setRange(int(lo), int(hi))
    spin.setSingleStep(step)
    spin.setSpecialValueText(special)  # shown instead of the minimum, e.g. "Auto" for 0 threads
    spin.setSuffix(suffix)
    return spin


def _float_spin(name: str, *, step: float, special: str = "") -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    lo, hi = RANGES[name]
    spin.setRange(lo, hi)
    spin.setDecimals(2)
    spin.setSingleStep(step)
    spin.setSpecialValueText(special)
    return spin


def _hint(text: str) -> QLabel:
    label = QLabel(text)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)  # secondary text that follows the theme
    label.setWordWrap(True)
    return label


def _row(*widgets: QWidget, stretch_first: bool = True) -> QWidget:
    """Several controls in one form row; the first takes the spare width."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for i, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if i == 0 and stretch_first else 0)
    return row


def _form(title: str, hint: str = "") -> tuple[QGroupBox, QFormLayout]:
    box = QGroupBox(title)
    form = QFormLayout(box)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    if hint:
        form.addRow(_hint(hint))
    return box, form


def _align_labels(*forms: QFormLayout) -> None:
    """Line up the fields of group boxes stacked in one column by giving their labels one width."""
    items = (form.itemAt(row, QFormLayout.ItemRole.LabelRole) for form in forms for row in range(form.rowCount()))
    labels = [label for item in items if item and isinstance(label := item.widget(), QLabel)]
    width = max(label.sizeHint().width() for label in labels)
    for label in labels:
        label.setMinimumWidth(width)


def _path_width(widget: QWidget) -> int:
    return widget.fontMetrics().averageCharWidth() * 44  # room for a typical models/<name>.gguf path


class SettingsDialog(QDialog):
    sig_forget_auto = Signal()
    """no arguments: drop what Auto measured, for every model"""

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self._original = settings

        # Speculative decoding (MTP)
        self.mtp_depth = _described(
            _choices(DEPTHS),
            "MTP depth",
            "How many tokens the model's MTP heads draft ahead for the model to check in one pass. "
            "The text is the same at every depth. Auto (recommended) times plain decoding and drafting "
            "on this machine and this text and runs the faster, drafting only where it pays; "
            "1-3 always draft that many; Off turns drafting off.",
        )
        self.forget_auto = _described(
            QPushButton("Forget what Auto learned"),
            "Forget what Auto learned",
            "Auto keeps what it measured for each model on this computer, so the next load starts settled. "
            "Forget it after changing hardware or drivers, or to let Auto measure afresh.",
        )
        self.forget_auto.clicked.connect(self.sig_forget_auto)
        self.draft_sampling = _described(
            _choices(DRAFT_SAMPLINGS),
            "Draft sampling",
            "Greedy: the heads propose their top token; a seeded reply is identical at every depth. "
            "Probabilistic: with temperature above 0, drafts are sampled and checked by rejection sampling, "
            "so more are accepted; the text still follows the model's own distribution.",
        )
        self.p_min = _described(
            _float_spin("p_min", step=0.05),
            "Draft threshold (p_min)",
            "Stop drafting when the head's top candidate is less likely than this. 0 always drafts the full depth.",
        )
        mtp_box, mtp_form = _form("Speculative decoding (MTP)")
        mtp_form.addRow("Depth", _row(self.mtp_depth, self.forget_auto))
        mtp_form.addRow("Draft threshold (p_min)", self.p_min)
        mtp_form.addRow("Draft sampling", self.draft_sampling)

        # Sampling
        self.temperature = _described(
            _float_spin("temperature", step=0.05, special="0 (greedy)"),
            "Temperature",
            "How adventurous the wording is. 0 always takes the most likely token; higher is more varied.",
        )
        self.top_k = _described(
            _int_spin("top_k", special="Off"),
            "Top-k",
            "Only consider this many of the most likely next tokens. Off considers them all.",
        )
        self.top_p = _described(
            _float_spin("top_p", step=0.01),
            "Top-p",
            "Only consider the most likely tokens whose chances add up to this much. 1 considers them all.",
        )
        self.min_p = _described(
            _float_spin("min_p", step=0.01),
            "Min-p",
            "Ignore tokens less likely than this fraction of the top token's chance. 0 turns this off.",
        )
        self.repeat_penalty = _described(
            _float_spin("repeat_penalty", step=0.05),
            "Repeat penalty",
            "Make recently used tokens less likely. 1 leaves them alone; higher repeats less.",
        )
        self.seed = _described(
            QDoubleSpinBox(),  # QSpinBox stops at 2**31 - 1; seeds go up to 2**32 - 2
            "Seed",
            "The number behind the random choices: the same seed and prompt give the same reply.",
        )
        self.seed.setDecimals(0)
        self.seed.setRange(0, SEED_MAX)
        self.random_seed = _described(QCheckBox("Random"), "Random seed", "Pick a new seed for every reply.")
        self.random_seed.toggled.connect(lambda on: self.seed.setEnabled(not on))
        self.max_tokens = _described(
            _int_spin("max_tokens", step=256, suffix=" tokens"),
            "Max tokens",
            "The longest a reply may get, reasoning included, before generation stops.",
        )
        sampling_box, sampling_form = _form("Sampling")
        sampling_form.addRow("Temperature", self.temperature)
        sampling_form.addRow("Top-k", self.top_k)
        sampling_form.addRow("Top-p", self.top_p)
        sampling_form.addRow("Min-p", self.min_p)
        sampling_form.addRow("Repeat penalty", self.repeat_penalty)
        sampling_form.addRow("Seed", _row(self.seed, self.random_seed))
        sampling_form.addRow("Max tokens", self.max_tokens)

        # Conversation
        self.system_prompt = _described(
            QPlainTextEdit(),
            "Default system prompt",
            "Instructions the model sees at the start of every new conversation. Leave empty for none.",
        )
        self.system_prompt.setPlaceholderText("e.g. You are a concise, friendly assistant.")
        self.system_prompt.setTabChangesFocus(True)  # Tab moves on, as in every other field
        self.system_prompt.setFixedHeight(self.system_prompt.fontMetrics().lineSpacing() * 5 + 12)
        self.reasoning_effort = _described(
            _choices(EFFORTS),
            "Reasoning effort",
            "How long the model thinks before it answers. Step 3.7 Flash uses this; other models ignore it.",
        )
        self.context_overflow = _described(
            _choices(OVERFLOWS),
            "When the context is full",
            "What happens when the conversation no longer fits in the context: stop and say so, "
            "or forget the oldest turns and carry on.",
        )
        conversation_box, conversation_form = _form("Conversation")
        conversation_form.addRow("System prompt", self.system_prompt)
        conversation_form.addRow(
            "Reasoning effort", _row(self.reasoning_effort, _hint("Step 3.7 Flash"), stretch_first=False)
        )
        conversation_form.addRow("When the context is full", self.context_overflow)

        # Model
        self.model_path = _described(
            QComboBox(),
            "Model file",
            "The GGUF file to chat with: type a path, pick a recent one, choose 'demo' for the built-in "
            "demo model, or Browse.",
        )
        # An editable combo: type any path, or pick a recent model (or the demo) from the list.
        model_edit = _described(QLineEdit(), "Model file", self.model_path.toolTip())
        model_edit.setPlaceholderText("No model chosen")
        self.model_path.setLineEdit(model_edit)
        self.model_path.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        # Long recent paths must not stretch the dialog; the field keeps a steady width.
        self.model_path.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_path.setMinimumWidth(_path_width(self.model_path))
        self.model_path.addItems(
            [*settings.recent_models, *([] if DEMO_NAME in settings.recent_models else [DEMO_NAME])]
        )
        self.model_browse = _described(QPushButton("Browse…"), "Browse for model file", "Choose a GGUF model file.")
        self.model_browse.clicked.connect(self._browse_model)
        self.mtp_model_path = _described(
            QLineEdit(),
            "MTP file",
            "StepFun's separate MTP-only GGUF, for models whose heads ship in their own file. "
            "Leave empty when the heads are inside the model file.",
        )
        self.mtp_model_path.setPlaceholderText("Heads inside the model file")
        self.mtp_model_path.setMinimumWidth(_path_width(self.mtp_model_path))
        self.mtp_browse = _described(
            QPushButton("Browse…"), "Browse for MTP file", "Choose a separate MTP-only GGUF file."
        )
        self.mtp_browse.clicked.connect(self._browse_mtp)
        self.mtp_clear = _described(
            QPushButton("Clear"), "Clear MTP file", "Use the heads inside the model file instead of a separate file."
        )
        self.mtp_clear.clicked.connect(self.mtp_model_path.clear)
        self.mtp_model_path.textChanged.connect(lambda text: self.mtp_clear.setEnabled(bool(text)))
        self.projector_path = _described(
            QLineEdit(),
            "Vision file",
            "The model's vision projector (mmproj GGUF), so it reads pictures you attach. Leave empty to use "
            "an mmproj file beside the model, if there is one.",
        )
        self.projector_path.setPlaceholderText("An mmproj*.gguf beside the model, if any")
        self.projector_path.setMinimumWidth(_path_width(self.projector_path))
        self.projector_browse = _described(
            QPushButton("Browse…"), "Browse for vision file", "Choose the model's mmproj GGUF file."
        )
        self.projector_browse.clicked.connect(self._browse_projector)
        self.projector_clear = _described(
            QPushButton("Clear"), "Clear vision file", "Use an mmproj file beside the model, if there is one."
        )
        self.projector_clear.clicked.connect(self.projector_path.clear)
        self.projector_path.textChanged.connect(lambda text: self.projector_clear.setEnabled(bool(text)))
        self.n_ctx = _described(
            _int_spin("n_ctx", step=1024, suffix=" tokens"),
            "Context size",
            "How much conversation the model can see at once. Bigger needs more memory; the model's own limit caps it.",
        )
        self.kv_type = _described(
            _choices(KV_TYPES_SHOWN),
            "KV-cache type",
            "The number format of the model's memory of the conversation. Smaller formats fit longer "
            "contexts in less memory, at a small cost in quality.",
        )
        self.threads = _described(
            _int_spin("threads", special="Auto"),
            "Threads",
            "How many CPU threads run the model. Auto uses every core.",
        )
        self.gpu_layers = _described(
            _int_spin("gpu_layers", special="None (CPU only)"),
            "GPU layers",
            "How many of the model's layers run on the GPU. 999 puts them all there.",
        )
        model_box, model_form = _form("Model", "Changing these reloads the model; Stride asks first.")
        model_form.addRow("Model file", _row(self.model_path, self.model_browse))
        model_form.addRow("MTP file", _row(self.mtp_model_path, self.mtp_browse, self.mtp_clear))
        model_form.addRow("Vision file", _row(self.projector_path, self.projector_browse, self.projector_clear))
        model_form.addRow("Context size", self.n_ctx)
        model_form.addRow("KV-cache type", self.kv_type)
        model_form.addRow("Threads", self.threads)
        model_form.addRow("GPU layers", self.gpu_layers)

        # Appearance
        self.theme = _described(_choices(THEMES), "Theme", "Follow the system's light or dark look, or pick one.")
        self.tint_drafts = _described(
            QCheckBox("Tint drafted tokens"),
            "Tint drafted tokens",
            "Shade the tokens that MTP drafted and the model accepted, to see speculative decoding at work.",
        )
        appearance_box, appearance_form = _form("Appearance")
        appearance_form.addRow("Theme", self.theme)
        appearance_form.addRow(self.tint_drafts)

        self.button_box = buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok
            | QDialogButtonBox.StandardButton.Cancel
            | QDialogButtonBox.StandardButton.RestoreDefaults
        )
        for which, name, tip in (
            (QDialogButtonBox.StandardButton.Ok, "OK", "Keep these settings."),
            (QDialogButtonBox.StandardButton.Cancel, "Cancel", "Close without changing anything."),
            (
                QDialogButtonBox.StandardButton.RestoreDefaults,
                "Restore defaults",
                "Put every setting back to its default. The chosen model files stay.",
            ),
        ):
            _described(buttons.button(which), name, tip)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        buttons.button(QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(self._restore_defaults)

        _align_labels(mtp_form, sampling_form, appearance_form)
        _align_labels(model_form, conversation_form)
        left = QVBoxLayout()
        for box in (mtp_box, sampling_box, appearance_box):
            left.addWidget(box)
        left.addStretch(1)
        right = QVBoxLayout()
        for box in (model_box, conversation_box):
            right.addWidget(box)
        right.addStretch(1)
        columns = QHBoxLayout()
        columns.addLayout(left, 1)
        columns.addLayout(right, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(columns)
        layout.addWidget(buttons)

        self._show(settings)

    def _show(self, s: Settings) -> None:
        _select(self.mtp_depth, s.mtp_depth)
        _select(self.draft_sampling, s.draft_sampling)
        self.p_min.setValue(s.p_min)
        self.temperature.setValue(s.temperature)
        self.top_k.setValue(s.top_k)
        self.top_p.setValue(s.top_p)
        self.min_p.setValue(s.min_p)
        self.repeat_penalty.setValue(s.repeat_penalty)
        self.random_seed.setChecked(s.seed == -1)
        self.seed.setEnabled(s.seed != -1)  # toggled() does not fire when the box is already in that state
        if s.seed != -1:
            self.seed.setValue(s.seed)
        self.max_tokens.setValue(s.max_tokens)
        self.system_prompt.setPlainText(s.system_prompt)
        _select(self.reasoning_effort, s.reasoning_effort)
        _select(self.context_overflow, s.context_overflow)
        self.model_path.setCurrentText(s.model_path)
        self.mtp_model_path.setText(s.mtp_model_path)
        self.mtp_clear.setEnabled(bool(s.mtp_model_path))
        self.projector_path.setText(s.projector_path)
        self.projector_clear.setEnabled(bool(s.projector_path))
        self.n_ctx.setValue(s.n_ctx)
        _select(self.kv_type, s.kv_type)
        self.threads.setValue(s.threads)
        self.gpu_layers.setValue(s.gpu_layers)
        _select(self.theme, s.theme)
        self.tint_drafts.setChecked(s.tint_drafts)

    def result_settings(self) -> Settings:
        """The edited settings, as a new object; the one passed in is left as it was."""
        return replace(
            self._original,
            mtp_depth=self.mtp_depth.currentData(),
            p_min=self.p_min.value(),
            draft_sampling=self.draft_sampling.currentData(),
            temperature=self.temperature.value(),
            top_k=self.top_k.value(),
            top_p=self.top_p.value(),
            min_p=self.min_p.value(),
            repeat_penalty=self.repeat_penalty.value(),
            seed=-1 if self.random_seed.isChecked() else int(self.seed.value()),
            max_tokens=self.max_tokens.value(),
            system_prompt=self.system_prompt.toPlainText(),
            reasoning_effort=self.reasoning_effort.currentData(),
            context_overflow=self.context_overflow.currentData(),
            model_path=self.model_path.currentText().strip(),
            mtp_model_path=self.mtp_model_path.text().strip(),
            projector_path=self.projector_path.text().strip(),
            n_ctx=self.n_ctx.value(),
            kv_type=self.kv_type.currentData(),
            threads=self.threads.value(),
            gpu_layers=self.gpu_layers.value(),
            recent_models=list(self._original.recent_models),
            theme=self.theme.currentData(),
            tint_drafts=self.tint_drafts.isChecked(),
        )

    def _restore_defaults(self) -> None:
        # The model files are the user's choice, not a tuning value: keep them.
        self._show(
            replace(
                Settings(),
                model_path=self.model_path.currentText().strip(),
                mtp_model_path=self.mtp_model_path.text().strip(),
                projector_path=self.projector_path.text().strip(),
            )
        )

    def _browse_model(self) -> None:
        path = self._choose_file("Choose a model file", self.model_path.currentText())
        if path:
            self.model_path.setCurrentText(path)

    def _browse_mtp(self) -> None:
        path = self._choose_file("Choose an MTP file", self.mtp_model_path.text() or self.model_path.currentText())
        if path:
            self.mtp_model_path.setText(path)

    def _browse_projector(self) -> None:
        near = self.projector_path.text() or self.model_path.currentText()
        path = self._choose_file("Choose a vision file (mmproj)", near)
        if path:
            self.projector_path.setText(path)

    def _choose_file(self, title: str, near: str) -> str:
        """Ask for a GGUF file, starting in the folder of `near` when it names one."""
        start = str(Path(near).parent) if near and near != DEMO_NAME else ""
        path, _ = QFileDialog.getOpenFileName(self, title, start, GGUF_FILTER)
        return path
