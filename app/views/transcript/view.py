"""The transcript list widget: scrolling that stays put, hover buttons, keys, menus.

It is a QListView, so only rows that intersect the viewport are painted. Row heights are lazy:
before a paint, the view lays out the rows in (and half a screen around) the viewport; when one
of them differs from what the list assumed, it lays out a screen and a half further each way,
relayouts the list (only cheap sizeHints: about 8 µs a row) and keeps the first visible message
where it was, or the bottom when it follows the bottom. The layout mode stays SinglePass: Batched
would shrink the scroll range on every relayout and lose a bottom-anchored position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import QAbstractItemModel, QEvent, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QContextMenuEvent,
    QCursor,
    QHelpEvent,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QResizeEvent,
)
from PySide6.QtWidgets import QAbstractItemView, QListView, QMenu, QStyle, QToolTip, QWidget

from app.views.pictures import PictureDialog
from app.views.transcript.delegate import ROW_PAD, SIDE, TranscriptDelegate
from app.views.transcript.model import AnyIndex, TranscriptModel

FOLLOW_SLACK = 4  # pixels from the bottom that still count as "at the bottom"
SETTLE_PASSES = 4  # a relayout can bring new rows into view; measure those too, a few times
NEAR_SCREENS = 0.5  # rows this close to the viewport get exact heights before they show
PREFETCH_SCREENS = 1.5  # ... and this far when a relayout is due anyway, so the next few scroll steps need none
COPIED_MS = 1500  # how long a code block's button says "Copied"


class TranscriptView(QListView):
    """The transcript list. It emits requests; controllers act on them."""

    sig_copy_requested = Signal(int)
    """row of the message to copy"""
    sig_regenerate_requested = Signal(int)
    """row of the reply to generate again"""
    sig_edit_requested = Signal(int)
    """row of the user message to edit and resend"""
    sig_copy_text_requested = Signal(str)
    """a code block's text, from its Copy button"""
    sig_picture_shown = Signal(object)
    """PictureDialog: a picture was opened larger (tests wait on it)"""

    def __init__(self, model: TranscriptModel | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._model: TranscriptModel | None = None
        self.layout_width = 1  # see _update_layout_width
        self._update_layout_width()
        self._following = True
        self._busy = False  # inside a layout or settle: scroll signals are ours, not the user's
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.timeout.connect(self._settle)
        self._hover: tuple[int, str] | None = None  # the row under the pointer, and the button there ("" none)
        self._copied: tuple[int, str] | None = None  # (row uid, code target) just copied: it says "Copied"
        self._copied_timer = QTimer(self)
        self._copied_timer.setSingleShot(True)
        self._copied_timer.setInterval(COPIED_MS)
        self._copied_timer.timeout.connect(self._clear_copied)
        self._busy_reply = False  # a reply is being generated: Edit and Regenerate are not offered
        self._delegate = TranscriptDelegate(self)
        self.setItemDelegate(self._delegate)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setFrameShape(QListView.Shape.NoFrame)
        self.setMouseTracking(True)  # pointing-hand cursor over reasoning toggles
        self.setAccessibleName("Conversation")
        self.setAccessibleDescription("Messages of the current conversation, oldest first")

        self.verticalScrollBar().valueChanged.connect(self._on_scrolled)

        # Space is handled in keyPressEvent (the list view would take it as a shortcut); "\t" shows it in menus.
        self.action_toggle_reasoning = self._action("Show thinking\tSpace", None, self.toggle_reasoning)
        self.action_copy = self._action("Copy", QKeySequence.StandardKey.Copy, self.sig_copy_requested.emit)
        self.action_regenerate = self._action("Regenerate", "Ctrl+R", self.sig_regenerate_requested.emit)
        self.action_edit = self._action("Edit and resend", "Ctrl+E", self.sig_edit_requested.emit)
        self._update_actions()
        if model is not None:
            self.setModel(model)

    def setModel(self, model: QAbstractItemModel | None) -> None:
        if not isinstance(model, TranscriptModel):
            raise TypeError("TranscriptView shows a TranscriptModel")
        if self._model is not None:
            self.transcript_model.modelReset.disconnect(self._on_reset)
        self._model = model
        self._delegate.reset()
        super().setModel(model)
        model.modelReset.connect(self._on_reset)
        self._update_actions()

    @property
    def transcript_model(self) -> TranscriptModel:
        if self._model is None:
            raise RuntimeError("TranscriptView has no model yet")
        return self._model

    @property
    def delegate(self) -> TranscriptDelegate:
        return self._delegate

    # Public API --------------------------------------------------------------------------

    def set_tint_drafts(self, on: bool) -> None:
        """Tint the answer text that came from accepted MTP drafts (heights do not change)."""
        if self._delegate.tint_drafts != on:
            self._delegate.tint_drafts = on
            self.viewport().update()

    def tint_drafts(self) -> bool:
        return self._delegate.tint_drafts

    def is_following(self) -> bool:
        return self._following

    def scroll_to_bottom_if_following(self) -> None:
        if self._following:
            self.scrollToBottom()

    def toggle_reasoning(self, row: int) -> None:
        state = self.transcript_model.state(row)
        if state.text("reasoning"):
            self.transcript_model.set_reasoning_expanded(row, not state.is_expanded)

    def context_menu(self, row: int) -> QMenu:
        """The actions for one message (it becomes the current one); the caller shows it."""
        self.setCurrentIndex(self.transcript_model.index(row))
        menu = QMenu(self)
        for action in (self.action_toggle_reasoning, self.action_copy, self.action_regenerate, self.action_edit):
            if action.isVisible():
                menu.addAction(action)
        return menu

    def request_settle(self) -> None:
        self._settle_timer.start(0)

    def set_busy(self, busy: bool) -> None:
        """A reply is being generated: the hover buttons offer Copy only (Edit and Regenerate would wait)."""
        if busy != self._busy_reply:
            self._busy_reply = busy
            self.viewport().update()

    def hidden_actions(self) -> frozenset[str]:
        return frozenset({"edit", "regenerate"}) if self._busy_reply else frozenset()

    # Hover buttons -------------------------------------------------------------------------

    def hovered_target(self, row: int) -> str | None:
        """None when the pointer is not over this row; else the button under it ("" for none)."""
        return self._hover[1] if self._hover is not None and self._hover[0] == row else None

    def copied_code(self, row: int) -> str | None:
        """The code block in this row whose Copy was just clicked, if any."""
        if self._copied is None or self._model is None or not 0 <= row < self._model.rowCount():
            return None
        return self._copied[1] if self._copied[0] == self._model.state(row).uid else None

    def target_at(self, pos: QPoint) -> tuple[int, str] | None:
        """The row at a viewport position, with the button there ("" when none); None off the rows."""
        index = self.indexAt(pos)
        if not index.isValid():
            return None
        row = int(index.row())
        local = pos - self.visualRect(index).topLeft() - QPoint(self.content_shift(), 0)
        for name, rect in self._delegate.targets(row):
            if name in self.hidden_actions():
                continue
            if rect.contains(local):
                return row, name
        return row, ""

    def _set_hover(self, hover: tuple[int, str] | None) -> None:
        if hover == self._hover:
            return
        for previous_or_new in (self._hover, hover):
            if previous_or_new is not None and self._model is not None:
                self.viewport().update(self.visualRect(self.transcript_model.index(previous_or_new[0])))
        self._hover = hover

    def _click_target(self, row: int, target: str) -> None:
        if target.startswith("picture:"):
            self.show_picture(row, int(target.split(":")[1]))
            return
        if target.startswith("code:"):
            self.sig_copy_text_requested.emit(self._delegate.code_text(row, target))
            self._copied = (self.transcript_model.state(row).uid, target)
            self._copied_timer.start()
            self.viewport().update(self.visualRect(self.transcript_model.index(row)))
            return
        self.setCurrentIndex(self.transcript_model.index(row))
        signal = {
            "copy": self.sig_copy_requested,
            "edit": self.sig_edit_requested,
            "regenerate": self.sig_regenerate_requested,
        }[target]
        signal.emit(row)

    def _clear_copied(self) -> None:
        self._copied = None
        self.viewport().update()

    # Actions -----------------------------------------------------------------------------

    def _action(self, text: str, keys: str | QKeySequence.StandardKey | None, emit: Callable[[int], object]) -> QAction:
        action = QAction(text, self)
        if keys is not None:
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        action.triggered.connect(lambda: self._on_action(emit))
        self.addAction(action)
        return action

    def _on_action(self, emit: Callable[[int], object]) -> None:
        row = self.currentIndex().row()
        if row >= 0:
            emit(row)

    def _update_actions(self) -> None:
        row = self.currentIndex().row()
        state = self.transcript_model.state(row) if self._model is not None and row >= 0 else None
        role = state.role if state else ""
        has_reasoning = bool(state and state.text("reasoning"))
        self.action_toggle_reasoning.setVisible(has_reasoning)
        if state and has_reasoning:
            label = "Hide thinking" if state.is_expanded else "Show thinking"
            self.action_toggle_reasoning.setText(f"{label}\tSpace")
        self.action_copy.setVisible(state is not None)
        self.action_regenerate.setVisible(role == "assistant")
        self.action_regenerate.setEnabled(bool(state and state.status != "streaming"))
        self.action_edit.setVisible(role == "user")

    def currentChanged(self, current: AnyIndex, previous: AnyIndex) -> None:
        super().currentChanged(current, previous)
        self._update_actions()

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        if event.reason() == QContextMenuEvent.Reason.Mouse:
            index = self.indexAt(event.pos())
            position = event.globalPos()
        else:  # keyboard: the menu key on the current message
            index = self.currentIndex()
            position = self.viewport().mapToGlobal(self.visualRect(index).topLeft() + QPoint(SIDE, ROW_PAD))
        if index.isValid():
            self.context_menu(index.row()).exec(position)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        toggle_keys = (Qt.Key.Key_Space, Qt.Key.Key_Return, Qt.Key.Key_Enter)
        row = self.currentIndex().row()
        if (
            event.key() in toggle_keys
            and not event.modifiers()
            and row >= 0
            and self.action_toggle_reasoning.isVisible()
        ):
            self.toggle_reasoning(row)
            event.accept()
            return
        super().keyPressEvent(event)

    # Mouse -------------------------------------------------------------------------------

    def _header_at(self, pos: QPoint) -> int | None:
        index = self.indexAt(pos)
        if not index.isValid():
            return None
        header = self._delegate.header_rect(index.row())
        origin = self.visualRect(index).topLeft() + QPoint(self.content_shift(), 0)
        if header is not None and header.translated(origin).contains(pos):
            return int(index.row())
        return None

    def mousePressEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        left = event.button() == Qt.MouseButton.LeftButton
        target = self.target_at(pos) if left else None
        if target is not None and target[1]:
            self._click_target(*target)
            event.accept()
            return
        row = self._header_at(pos) if left else None
        if row is None:
            super().mousePressEvent(event)
            return
        self.setCurrentIndex(self.transcript_model.index(row))
        self.toggle_reasoning(row)
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        pos = event.position().toPoint()
        target = self.target_at(pos)
        self._set_hover(target)
        over = self._header_at(pos) is not None or bool(target and target[1])
        self.viewport().setCursor(Qt.CursorShape.PointingHandCursor if over else Qt.CursorShape.ArrowCursor)
        super().mouseMoveEvent(event)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Leave:
            self._set_hover(None)
        elif event.type() == QEvent.Type.ToolTip and isinstance(event, QHelpEvent):
            target = self.target_at(event.pos())
            tip = self._tooltip(*target) if target is not None else ""
            if tip:
                QToolTip.showText(event.globalPos(), tip, self.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().viewportEvent(event)

    def show_picture(self, row: int, number: int) -> PictureDialog | None:
        """Open a message's picture larger, in its own window (not modal: the chat goes on beside it)."""
        digest = self.transcript_model.message(row).images[number]
        image = self.transcript_model.picture(digest)
        if image.isNull():
            QToolTip.showText(self.cursor().pos(), "This picture's file is missing from the data folder", self)
            return None
        dialog = PictureDialog(image, f"Picture {number + 1} ({image.width()} x {image.height()} px)", self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.show()
        self.sig_picture_shown.emit(dialog)
        return dialog

    def _tooltip(self, row: int, target: str) -> str:
        if target.startswith("picture:"):
            return "Click to view larger"
        if target.startswith("code:"):
            return "Copy the code"
        layout = self._delegate.layout(row)
        return next((action.tooltip for action in layout.actions if action.name == target), "")

    # Layout: lazy exact heights, anchored ------------------------------------------------

    def doItemsLayout(self) -> None:
        if self._busy:
            super().doItemsLayout()
            return
        self._busy = True
        try:
            anchor = self._anchor()
            super().doItemsLayout()
            self._settle_locked(anchor, relaid=True)
        finally:
            self._busy = False

    def _settle(self) -> None:
        """Lay out the rows around the viewport exactly; relayout the list if that changed heights."""
        if self._busy:
            return
        self._busy = True
        try:
            self._settle_locked(self._anchor(), relaid=False)
        finally:
            self._busy = False

    def _settle_locked(self, anchor: tuple[int, int] | None, relaid: bool) -> None:
        for _ in range(SETTLE_PASSES):
            if relaid:
                self._restore(anchor)
            if not self._measure(NEAR_SCREENS):
                return
            self._measure(PREFETCH_SCREENS)  # a relayout is due anyway: cover the next scroll steps too
            super().doItemsLayout()
            relaid = True
        self._restore(anchor)

    def _measure(self, screens: float) -> bool:
        """Lay out the rows within this many screens of the viewport; True when the list had another height."""
        count = self.transcript_model.rowCount() if self._model is not None else 0
        if count == 0 or not self.isVisible():
            return False
        if not self.visualRect(self.transcript_model.index(count - 1)).isValid():
            return False  # rows without positions: a relayout is posted, and it measures when it runs
        margin = int(self.viewport().height() * screens)
        stale = False
        for row in range(self._row_at(-margin), self._row_at(self.viewport().height() + margin) + 1):
            stale = self._delegate.layout(row).height != self.allocated_height(row) or stale
        return stale

    def allocated_height(self, row: int) -> int:
        """The height the list gave the row at its last layout.

        Not visualRect().height(): QListView sizes that rect from the current sizeHint, while row
        positions stay those of the last layout.
        """
        model = self.transcript_model
        top = self.visualRect(model.index(row)).top()
        if row + 1 < model.rowCount():
            return int(self.visualRect(model.index(row + 1)).top() - top)
        return int(self.contentsSize().height() - self.verticalOffset() - top)

    def _row_at(self, y: int) -> int:
        """The row at viewport height y, clamped to the rows there are (indexAt fails off screen)."""
        model = self.transcript_model
        low, high = 0, model.rowCount() - 1
        while low < high:  # the last row whose top is at or above y
            mid = (low + high + 1) // 2
            if self.visualRect(model.index(mid)).top() <= y:
                low = mid
            else:
                high = mid - 1
        return low

    def _anchor(self) -> tuple[int, int] | None:
        """What to keep in place across a relayout: None for the bottom, else (row, its top)."""
        if self._following:
            return None
        if self._model is None or self._model.rowCount() == 0:
            return None
        row = self._row_at(0)
        return row, self.visualRect(self._model.index(row)).top()

    def _restore(self, anchor: tuple[int, int] | None) -> None:
        if anchor is None:
            if self._following:
                self.scrollToBottom()
            return
        row, top = anchor
        if row < self.transcript_model.rowCount():
            bar = self.verticalScrollBar()
            bar.setValue(bar.value() + self.visualRect(self.transcript_model.index(row)).top() - top)

    def _on_scrolled(self, value: int) -> None:
        if self._busy:
            return
        self._following = value >= self.verticalScrollBar().maximum() - FOLLOW_SLACK
        self._settle()
        if self._hover is not None:  # the rows moved under a still pointer
            self._set_hover(self.target_at(self.viewport().mapFromGlobal(QCursor.pos())))

    def _on_reset(self) -> None:
        self._delegate.reset()
        self._hover = None
        self._following = True  # a conversation opens at its latest message
        self._update_actions()

    def dataChanged(self, topLeft: AnyIndex, bottomRight: AnyIndex, roles: Sequence[int] = ()) -> None:
        # Not QListView.dataChanged: Qt 6 answers every change with a relayout of every row (40 ms
        # at 5,000 rows, up to 10 times a second while streaming). Repaint the rows, and let the settle
        # relayout only when a row on screen changed height; rows off screen are measured when
        # scrolled to.
        rows = self.visualRect(topLeft).united(self.visualRect(bottomRight))
        if self.isVisible() and rows.intersects(self.viewport().rect()):
            self.viewport().update(rows)
            if not self._settle_timer.isActive():  # else a settle is due this turn: it covers this change
                self._settle()
                self.request_settle()  # for any further changes this turn (a caller setting many summaries)
        if topLeft.row() <= self.currentIndex().row() <= bottomRight.row():
            self._update_actions()

    def scrollTo(
        self, index: AnyIndex, hint: QAbstractItemView.ScrollHint = QAbstractItemView.ScrollHint.EnsureVisible
    ) -> None:
        # Clicking a message taller than the screen must not jump to its top.
        rect = self.visualRect(index)
        tall = rect.height() > self.viewport().height()
        if hint == QAbstractItemView.ScrollHint.EnsureVisible and tall and rect.intersects(self.viewport().rect()):
            return
        super().scrollTo(index, hint)

    def _update_layout_width(self) -> bool:
        """Rows are laid out as if the scroll bar were always shown. Their heights must not depend
        on whether it is, or showing it could make it unnecessary, hiding it necessary, and so on."""
        extent = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self.verticalScrollBar())
        width = max(1, self.contentsRect().width() - extent)
        changed = width != self.layout_width
        self.layout_width = width
        return changed

    def content_shift(self) -> int:
        """How far right rows are drawn, to stay centred while the scroll bar is hidden."""
        return max(0, (self.viewport().width() - self.layout_width) // 2)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        if self._update_layout_width():
            self.doItemsLayout()  # every row's height depends on the width; QListView only relayouts on height

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._delegate.reset()
            self._update_layout_width()
            self.doItemsLayout()
