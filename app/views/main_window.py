"""The main window: layout, menus, shortcuts.

What the user asks for leaves as the window's own signals (its menus, buttons, sidebar and
transcript gathered in one place); what the controller shows comes in through its methods. The
controller never reaches into the widgets, except the transcript's model, which it fills.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal, SignalInstance
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.resources import icon
from app.views.composer import Composer
from app.views.header import ContextMeter, ElidedLabel
from app.views.pictures import Picture
from app.views.server_panel import ServerPanel
from app.views.sidebar import ConversationLike, Sidebar
from app.views.stats_panel import StatsPanel
from app.views.transcript import TranscriptModel, TranscriptView
from engine.api import StatsSnapshot


class NoticeBar(QFrame):
    """A one-line message above the composer, with up to two action buttons."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("noticeBar")
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.label.setAccessibleName("Notice")
        self.primary = QPushButton()
        self.secondary = QPushButton()
        self.close_button = QPushButton("✕")
        self.close_button.setAccessibleName("Dismiss notice")
        self.close_button.setFlat(True)
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 4, 4)
        row.addWidget(self.label, 1)
        row.addWidget(self.primary)
        row.addWidget(self.secondary)
        row.addWidget(self.close_button)
        self.close_button.clicked.connect(self.hide)
        self.hide()

    def show_message(self, text: str, primary: str = "", secondary: str = "") -> None:
        self.label.setText(text)
        self.label.setAccessibleDescription(text)
        for button, caption in ((self.primary, primary), (self.secondary, secondary)):
            button.setText(caption)
            button.setAccessibleName(caption)
            button.setVisible(bool(caption))
        self.show()


class MainWindow(QMainWindow):
    sig_close_requested = Signal()
    """no arguments: the user closed the window; the controller shuts the engine down, then allows it"""
    sig_send = Signal(str)
    """text: the message to send (the composer's Send, Ctrl+Return)"""
    sig_stop = Signal()
    """no arguments: stop the reply or the load (the composer's Stop, Esc)"""
    sig_image_dropped = Signal()
    """no arguments: a picture came to the composer while the model cannot read pictures"""
    sig_picture_refused = Signal(str)
    """why a file or pasted content could not be attached"""
    sig_new_chat = Signal()
    """no arguments: start a new conversation (menu, shortcut or sidebar)"""
    sig_choose_model = Signal()
    """no arguments: open the model picker (menu, shortcut or the header's button)"""
    sig_cancel_load = Signal()
    """no arguments: the status bar's Cancel while a model loads"""
    sig_open_settings = Signal()
    """no arguments: open the settings dialog"""
    sig_import = Signal()
    """no arguments: import a conversation from a file"""
    sig_export = Signal(object, str)
    """conversation id (None: the open one), format ("md" or "json"): export it to a file"""
    sig_rename = Signal(object)
    """conversation id (None: the open one): ask for a new title"""
    sig_delete = Signal(int)
    """conversation id: delete it (after asking)"""
    sig_conversation_selected = Signal(int)
    """conversation id: open it"""
    sig_search = Signal(str)
    """text: filter the conversation list ("" shows all)"""
    sig_edit_system_prompt = Signal()
    """no arguments: edit the open conversation's system prompt"""
    sig_tint_toggled = Signal(bool)
    """on: the user switched the draft tint on or off"""
    sig_open_log_folder = Signal()
    """no arguments: show the log folder"""
    sig_regenerate_last = Signal()
    """no arguments: regenerate the last reply (the header's button)"""
    sig_regenerate = Signal(int)
    """row: regenerate this reply"""
    sig_edit = Signal(int)
    """row: edit this message and resend it"""
    sig_copy_message = Signal(int)
    """row: copy this message's text"""
    sig_copy_text = Signal(str)
    """text: a code block's Copy button"""
    sig_notice_primary = Signal()
    """no arguments: the notice's first button was clicked (the notice has hidden itself)"""
    sig_notice_secondary = Signal()
    """no arguments: the notice's second button was clicked (the notice has hidden itself)"""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Stride")
        self.setWindowIcon(icon("stride"))
        self.setAcceptDrops(True)
        self._allow_close = False

        self.sidebar = Sidebar()
        self.transcript_model = TranscriptModel()
        self.transcript = TranscriptView()
        self.transcript.setModel(self.transcript_model)
        self.composer = Composer()
        self.stats_panel = StatsPanel()
        self.server_panel = ServerPanel()
        self.notice = NoticeBar()

        # Header: which model, change it, how full the context is.
        self.model_label = ElidedLabel("No model loaded")  # a long name ends in "…", never squeezes the rest
        self.model_label.setObjectName("modelLabel")
        self.model_label.setAccessibleName("Loaded model")
        self.model_button = QPushButton(icon("model"), "Model…")
        self.model_button.setAccessibleName("Choose a model")
        self.model_button.setToolTip("Open a GGUF model (Ctrl+O)")
        self.context_meter = ContextMeter()
        self.regenerate_button = QPushButton(icon("regenerate"), "Regenerate")
        self.regenerate_button.setAccessibleName("Regenerate the last reply")
        header = QHBoxLayout()
        header.setSpacing(10)
        header.addWidget(self.model_label, 1)
        header.addWidget(self.context_meter)
        header.addWidget(self.regenerate_button)
        header.addWidget(self.model_button)

        self.prompt_progress = QProgressBar()
        self.prompt_progress.setAccessibleName("Reading the conversation")
        self.prompt_progress.setFormat("Reading the conversation… %p%")
        self.prompt_progress.hide()

        center = QWidget()
        column = QVBoxLayout(center)
        column.setContentsMargins(4, 8, 4, 8)
        column.addLayout(header)
        column.addWidget(self.transcript, 1)
        column.addWidget(self.notice)
        column.addWidget(self.prompt_progress)
        column.addWidget(self.composer)

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(center)
        self.splitter.addWidget(self.stats_panel)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([230, 700, 270])
        self.setCentralWidget(self.splitter)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.server_panel)
        self.server_panel.hide()  # View -> Server shows it

        # Status bar: model loading with a Cancel button.
        self.load_progress = QProgressBar()
        self.load_progress.setAccessibleName("Loading the model")
        self.load_progress.setRange(0, 1000)
        self.load_progress.setFixedWidth(260)
        self.load_cancel = QPushButton("Cancel")
        self.load_cancel.setAccessibleName("Cancel loading")
        self.status_label = QLabel()
        self.status_label.setAccessibleName("Status")
        self.serving_label = QLabel("Serving another app: your message waits its turn")
        self.serving_label.setAccessibleName("The model is busy serving")
        self.serving_label.hide()
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.serving_label)
        self.statusBar().addPermanentWidget(self.load_progress)
        self.statusBar().addPermanentWidget(self.load_cancel)
        self.set_loading(False)

        self._build_actions()
        self._relay_requests()
        self.resize(1240, 800)

    def _action(
        self, text: str, shortcut: QKeySequence | QKeySequence.StandardKey | str | None = None, icon_name: str = ""
    ) -> QAction:
        action = QAction(icon(icon_name), text, self) if icon_name else QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        self.addAction(action)  # shortcuts work even with the menu bar hidden
        return action

    def _build_actions(self) -> None:
        self.act_new = self._action("&New chat", QKeySequence.StandardKey.New, "new-chat")
        self.act_open_model = self._action("&Open model…", QKeySequence.StandardKey.Open, "model")
        self.act_import = self._action("&Import conversation…")
        self.act_export_md = self._action("Export as &Markdown…", icon_name="export")
        self.act_export_json = self._action("Export as &JSON…", icon_name="export")
        self.act_quit = self._action("&Quit", QKeySequence.StandardKey.Quit)
        self.act_settings = self._action("&Settings…", "Ctrl+,", "settings")
        self.act_stop = self._action("S&top reply", "Esc", "stop")
        self.act_send = self._action("&Send", "Ctrl+Return", "send")
        self.act_focus = self._action("&Focus message box", "Ctrl+L")
        self.act_rename = self._action("&Rename conversation", "F2", "edit")
        self.act_system_prompt = self._action("System &prompt for this chat…", "Ctrl+Shift+P")
        self.act_tint = self._action("&Tint drafted tokens", "Ctrl+T")
        self.act_tint.setCheckable(True)
        self.act_stats = self._action("Show &speed panel", "Ctrl+I")
        self.act_stats.setCheckable(True)
        self.act_stats.setChecked(True)
        self.act_log_folder = self._action("Open &log folder")
        self.act_about = self._action("&About Stride")

        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        for act in (
            self.act_new,
            self.act_open_model,
            None,
            self.act_import,
            self.act_export_md,
            self.act_export_json,
            None,
            self.act_quit,
        ):
            file_menu.addSeparator() if act is None else file_menu.addAction(act)
        chat_menu = bar.addMenu("&Chat")
        for act in (self.act_send, self.act_stop, self.act_focus, self.act_rename, self.act_system_prompt):
            chat_menu.addAction(act)
        view_menu = bar.addMenu("&View")
        view_menu.addAction(self.act_tint)
        view_menu.addAction(self.act_stats)
        view_menu.addAction(self.server_panel.toggleViewAction())
        settings_menu = bar.addMenu("&Settings")
        settings_menu.addAction(self.act_settings)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_log_folder)
        help_menu.addAction(self.act_about)
        self.act_stats.toggled.connect(self.stats_panel.setVisible)

    def _relay_requests(self) -> None:
        """Each thing the user can ask for, from whichever widget, leaves as one of the window's signals."""
        composer, sidebar, transcript = self.composer, self.sidebar, self.transcript
        composer.sig_send.connect(self.sig_send)
        composer.sig_stop.connect(self.sig_stop)
        composer.sig_image_dropped.connect(self.sig_image_dropped)
        composer.sig_picture_refused.connect(self.sig_picture_refused)
        self.act_send.triggered.connect(composer.submit)
        self.act_stop.triggered.connect(self.sig_stop.emit)
        self.act_focus.triggered.connect(self.focus_composer)
        self.act_quit.triggered.connect(self.close)
        self.act_about.triggered.connect(self._about)
        self.act_new.triggered.connect(self.sig_new_chat.emit)
        sidebar.sig_new.connect(self.sig_new_chat)
        self.act_open_model.triggered.connect(self.sig_choose_model.emit)
        self.model_button.clicked.connect(self.sig_choose_model.emit)
        self.load_cancel.clicked.connect(self.sig_cancel_load.emit)
        self.act_settings.triggered.connect(self.sig_open_settings.emit)
        self.act_import.triggered.connect(self.sig_import.emit)
        self.act_export_md.triggered.connect(lambda: self.sig_export.emit(None, "md"))
        self.act_export_json.triggered.connect(lambda: self.sig_export.emit(None, "json"))
        sidebar.sig_export.connect(lambda conversation_id: self.sig_export.emit(conversation_id, "md"))
        self.act_rename.triggered.connect(lambda: self.sig_rename.emit(None))
        sidebar.sig_rename.connect(lambda conversation_id: self.sig_rename.emit(conversation_id))
        sidebar.sig_delete.connect(self.sig_delete)
        sidebar.sig_selected.connect(self.sig_conversation_selected)
        sidebar.sig_search.connect(self.sig_search)
        self.act_system_prompt.triggered.connect(self.sig_edit_system_prompt.emit)
        self.act_tint.toggled.connect(self._on_tint_toggled)
        self.act_log_folder.triggered.connect(self.sig_open_log_folder.emit)
        self.regenerate_button.clicked.connect(self.sig_regenerate_last.emit)
        transcript.sig_regenerate_requested.connect(self.sig_regenerate)
        transcript.sig_edit_requested.connect(self.sig_edit)
        transcript.sig_copy_requested.connect(self.sig_copy_message)
        transcript.sig_copy_text_requested.connect(self.sig_copy_text)
        self.notice.primary.clicked.connect(lambda: self._notice_clicked(self.sig_notice_primary))
        self.notice.secondary.clicked.connect(lambda: self._notice_clicked(self.sig_notice_secondary))

    def _on_tint_toggled(self, on: bool) -> None:
        self.transcript.set_tint_drafts(on)
        self.sig_tint_toggled.emit(on)

    def _notice_clicked(self, signal: SignalInstance) -> None:
        self.notice.hide()
        signal.emit()

    def _about(self) -> None:
        QMessageBox.about(
            self,
            "About Stride",
            "Stride: offline chat with Step 3.5/3.7 Flash, faster with multi-token prediction.",
        )

    # What the controller shows ------------------------------------------------------------

    def show_status(self, text: str) -> None:
        """The status bar's message ("" clears it)."""
        self.status_label.setText(text)

    def set_serving(self, serving: bool) -> None:
        """Whether the model is busy with another app's request (a message sent now waits for it)."""
        self.serving_label.setVisible(serving)

    def show_notice(self, text: str, primary: str = "", secondary: str = "") -> None:
        """The notice above the composer, with buttons captioned primary and secondary ("" none)."""
        self.notice.show_message(text, primary, secondary)

    def hide_notice(self) -> None:
        self.notice.hide()

    def focus_composer(self) -> None:
        self.composer.edit.setFocus()

    def set_ready(self, ready: bool) -> None:
        """Whether a model is loaded, so that Send can send."""
        self.composer.set_ready(ready)

    def clear_composer(self) -> None:
        self.composer.clear()

    def set_composer_text(self, text: str) -> None:
        self.composer.set_text(text)

    def composer_pictures(self) -> list[Picture]:
        """The pictures attached to the message being written."""
        return list(self.composer.pictures)

    def set_composer_pictures(self, pictures: Sequence[Picture]) -> None:
        self.composer.set_pictures(pictures)

    def set_reads_pictures(self, reads: bool) -> None:
        """Whether the loaded model reads pictures (else attaching says how to get a vision file)."""
        self.composer.set_reads_pictures(reads)

    def show_conversations(self, items: Sequence[ConversationLike], current: int | None) -> None:
        """The sidebar's list, newest first, with the open conversation selected."""
        self.sidebar.set_conversations(items, current)

    def scroll_to_latest(self) -> None:
        self.transcript.scrollToBottom()

    def follow_stream(self) -> None:
        """Streamed text arrived: keep the latest line in view, unless the reader scrolled up."""
        self.transcript.scroll_to_bottom_if_following()

    def set_tint_drafts(self, on: bool) -> None:
        """Tint drafted text (the View menu's check mark follows)."""
        self.act_tint.setChecked(on)
        self.transcript.set_tint_drafts(on)

    def show_heads(self, n_heads: int, reason: str | None) -> None:
        """The loaded model's MTP heads in the speed panel; reason: why MTP is off, when it is."""
        self.stats_panel.set_model(n_heads, reason)

    def start_stats(self, n_heads: int) -> None:
        """A reply starts: the speed panel's figures go back to "–"."""
        self.stats_panel.reset(n_heads)

    def show_stats(self, snapshot: StatsSnapshot) -> None:
        """The running reply's figures, live."""
        self.stats_panel.update_stats(snapshot)

    def finish_stats(self, snapshot: StatsSnapshot | None) -> None:
        """The reply ended; snapshot: its final figures, when it has them."""
        self.stats_panel.finish(snapshot)

    # Display helpers (layout only) -----------------------------------------------------

    def set_loading(self, loading: bool, fraction: float = 0.0, stage: str = "") -> None:
        self.load_progress.setVisible(loading)
        self.load_cancel.setVisible(loading)
        self.load_progress.setValue(int(fraction * 1000))
        if loading:
            self.load_progress.setFormat(f"{stage} %p%")
            self.status_label.setText(stage)

    def show_model(self, text: str, tooltip: str = "") -> None:
        """The header's model line (cut with "…" when narrow); the tooltip says it in full."""
        self.model_label.setText(text)
        self.model_label.setToolTip(tooltip or text)
        self.model_label.setAccessibleDescription(tooltip or text)

    def set_replying(self, replying: bool) -> None:
        """While a reply is generated: Send becomes Stop, and nothing offers to regenerate or edit."""
        self.composer.set_busy(replying)
        self.regenerate_button.setEnabled(not replying)
        self.transcript.set_busy(replying)

    def set_context(self, used: int, total: int) -> None:
        self.context_meter.set_values(min(used, total), total)

    def set_prompt_progress(self, done: int, total: int) -> None:
        """How much of the prompt is read, above the composer and in the speed panel."""
        self.prompt_progress.setVisible(done < total)
        self.prompt_progress.setRange(0, max(total, 1))
        self.prompt_progress.setValue(done)
        self.stats_panel.set_prompt_progress(done, total)

    def hide_prompt_progress(self) -> None:
        self.prompt_progress.hide()

    # Geometry is remembered in QSettings: window state is not a user setting.

    def restore_geometry(self) -> None:
        store = QSettings("Stride", "Stride")
        geometry = store.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        splitter = store.value("window/splitter")
        if isinstance(splitter, QByteArray):
            self.splitter.restoreState(splitter)

    def save_geometry(self) -> None:
        store = QSettings("Stride", "Stride")
        store.setValue("window/geometry", self.saveGeometry())
        store.setValue("window/splitter", self.splitter.saveState())

    def allow_close(self) -> None:
        self._allow_close = True

    def closeEvent(self, event: QCloseEvent) -> None:
        # The controller shuts the engine down (cancel, quit, wait) and then allows the close.
        if not self._allow_close:
            self.sig_close_requested.emit()
        if self._allow_close:
            self.save_geometry()
            event.accept()
        else:
            event.ignore()
