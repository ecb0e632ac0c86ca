"""The controller's models part: the picker, loading on the engine thread, and what a load's
outcome shows (the header, the speed panel's heads, a notice or an error).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Signal

from app.controller.base import ControllerBase
from app.model_files import ModelChoice, display_name, engine_paths, recent_with, remembered
from app.model_inspector import ModelInspector
from app.settings import LoadResult
from app.store import ConversationStore
from app.views.error_dialog import show_error
from app.views.main_window import MainWindow
from app.views.model_dialog import ModelPickerDialog, confirm_too_big
from engine.api import DEMO_NAME, MTP_NOTE_TEXT, Failure, NotEnoughMemory
from engine.qt_worker import LoadedModel, LoadRequest, ensure_demo_model, projector_beside


class ModelsPart(ControllerBase):
    sig_model_ready = Signal(object)
    """LoadedModel"""
    sig_model_failed = Signal(str)
    """the message shown for why the model did not load"""

    def __init__(
        self, window: MainWindow, store: ConversationStore, settings: LoadResult, settings_path: Path | None
    ) -> None:
        super().__init__(window, store, settings, settings_path)
        self.inspector = ModelInspector(self)  # reads models for the picker, off the GUI thread
        self.load_request = 0
        self._loading: tuple[ModelChoice, ModelChoice, str] = ("", "", "")  # asked again when it does not fit
        self._proposed: Path | None = None  # the vision file found beside the model for this load, if any

    def _offer_models(self, text: str) -> None:
        """A notice with the two ways to get a model: the built-in demo, or a file."""
        self._notice(
            text,
            ("Use the demo model", lambda: self.load_model(DEMO_NAME, "")),
            ("Open a model…", self.choose_model),
        )

    def choose_model(self) -> None:
        dialog = ModelPickerDialog(
            self.settings.recent_models,
            self.settings.n_ctx,
            self.window,
            initial_path=self.settings.model_path,
            initial_mtp=self.settings.mtp_model_path,
            inspector=self.inspector,
        )
        # The picker has shown the memory verdict and asked already when the model does not fit.
        dialog.accepted.connect(
            lambda: self.load_model(*dialog.selected(), dialog.selected_projector(), check_memory=False)
        )
        dialog.open()

    def load_model(
        self,
        model_path: ModelChoice,
        mtp_path: ModelChoice,
        projector_path: str | None = None,
        *,
        check_memory: bool = True,
        beside: bool = True,
    ) -> None:
        """Load on the engine thread; with check_memory, a model too big for free memory is not
        loaded until the user says so (startup, settings reload and notices come this way).

        Each path may be any part of a multi-part set (the whole set loads), or a tuple of parts
        picked together; settings and the recent list keep the set's part 1, one entry per set.
        projector_path: the vision file; None keeps the one set for this model, "" takes an
        mmproj*.gguf beside the model if there is one (unless `beside` is False: text only)."""
        if projector_path is None:
            same_model = remembered(model_path) == self.settings.model_path
            projector_path = self.settings.projector_path if same_model else ""
        if self.active is not None:
            self.stop()
        try:
            path = ensure_demo_model() if model_path == DEMO_NAME else engine_paths(model_path)
        except OSError as exc:
            show_error(self.window, "Cannot create the demo model", f"{exc}. Check that the data folder is writable.")
            return
        self._loading = (model_path, mtp_path, projector_path)
        self._remember(remembered(model_path), remembered(mtp_path), projector_path)
        self.loaded = None
        self.window.set_ready(False)
        self.window.set_reads_pictures(False)
        self.window.hide_notice()
        name = "demo" if model_path == DEMO_NAME else Path(self.settings.model_path).name
        self.window.show_model(f"Loading {name}…")
        self.window.set_loading(True, 0.0, "Reading the model")
        mtp = engine_paths(mtp_path) if mtp_path else None
        first = path if isinstance(path, Path) else path[0]
        projector = Path(projector_path) if projector_path else None
        self._proposed = None
        if projector is None and model_path != DEMO_NAME and beside:
            projector = self._proposed = projector_beside(first)  # as model hubs ship them: proposed without asking
        request = LoadRequest(path, mtp, self.settings.load_options(), check_memory=check_memory, projector=projector)
        self.load_request = self.engine.load(request)

    def _remember(self, model_path: str, mtp_path: str, projector_path: str) -> None:
        self.settings = replace(
            self.settings,
            model_path=model_path,
            mtp_model_path=mtp_path,
            projector_path=projector_path,
            recent_models=recent_with(self.settings.recent_models, model_path),
        )
        self._save_settings()

    def _on_load_progress(self, request_id: int, fraction: float, stage: str) -> None:
        if request_id == self.load_request:
            self.window.set_loading(True, fraction, stage)

    def _on_loaded(self, request_id: int, loaded: LoadedModel) -> None:
        if request_id != self.load_request:
            return
        self.loaded = loaded
        w = self.window
        w.set_loading(False)
        info = loaded.info
        if self.settings.model_path != DEMO_NAME:
            # Only now is part 1 of parts picked together (or renamed) known for sure: remember that one.
            mtp = str(info.mtp_path) if info.mtp_path else self.settings.mtp_model_path
            if (str(info.path), mtp) != (self.settings.model_path, self.settings.mtp_model_path):
                self._remember(str(info.path), mtp, self.settings.projector_path)
        demo = self.settings.model_path == DEMO_NAME
        name = "Stride demo" if demo else display_name(info.name, info.path, info.quantization)
        heads = f"MTP {loaded.n_heads} heads" if loaded.n_heads else "no MTP"
        details = f"{info.quantization} · {heads}" + (" · reads pictures" if loaded.reads_pictures else "")
        w.show_model(f"{name} · {details}", f"{info.name or info.path.name} · {details}\n{info.path}")
        w.show_status("Ready")
        reason = None
        if loaded.n_heads == 0:  # said once, in the speed panel, which explains MTP's state
            reason = MTP_NOTE_TEXT["weights_absent" if info.mtp_weights == "absent" else "no_heads"]
        w.show_heads(loaded.n_heads, reason)
        w.set_context(0, loaded.n_ctx)
        w.set_ready(True)
        w.set_reads_pictures(loaded.reads_pictures)
        w.focus_composer()
        self.sig_model_ready.emit(loaded)

    def _on_load_too_big(self, request_id: int, shortfall: NotEnoughMemory) -> None:
        if request_id != self.load_request:
            return
        self.window.set_loading(False)
        if confirm_too_big(self.window, shortfall.needed, shortfall.free):
            self.load_model(*self._loading, check_memory=False)
        else:  # the user has just read why: a notice, not another dialog
            self._not_loaded(f"{shortfall}; it was not loaded.")

    def _on_load_failed(self, request_id: int, failure: Failure) -> None:
        if request_id != self.load_request:
            return
        proposed = self._proposed
        if proposed is not None and failure.kind != "cancelled" and proposed.name in failure.message:
            # A vision file merely found beside the model must not keep the model from loading: text only.
            self.load_model(*self._loading, beside=False)
            self._notice(f"Loaded without pictures: {failure.message}.")
            return
        if failure.kind != "cancelled":
            show_error(self.window, "The model could not be loaded", failure.message, failure.details)
        self._not_loaded(failure.message)

    def _not_loaded(self, message: str) -> None:
        w = self.window
        w.set_loading(False)
        w.show_model("No model loaded")
        w.show_status("")
        self._offer_models(message)
        self.sig_model_failed.emit(message)
