"""The small buttons a message shows while the pointer is over it: Copy, Edit (yours), Regenerate (replies).

The transcript paints them (its rows are painted, not widgets); this module says where they go
and how they look. Their place is reserved whether they show or not, so hovering never moves text.
The same actions are in the message's context menu and on keyboard shortcuts.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPoint, QRect, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPixmap

from app.resources import tinted_pixmap
from app.views.markdown import Theme, blend

ACTION_SIZE = 24  # a button's side
ICON_SIZE = 16
ACTION_GAP = 2

# name, tooltip (also the icon's file name is the name)
ROLE_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "user": (("copy", "Copy"), ("edit", "Edit and resend")),
    "assistant": (("copy", "Copy"), ("regenerate", "Regenerate")),
}


@dataclass(frozen=True)
class MessageAction:
    name: str  # "copy", "edit" or "regenerate"
    tooltip: str
    rect: QRect  # row coordinates


def actions_width(role: str) -> int:
    n = len(ROLE_ACTIONS.get(role, ()))
    return n * ACTION_SIZE + max(0, n - 1) * ACTION_GAP


def action_row(role: str, right: int, top: int) -> list[MessageAction]:
    """The role's buttons in a row that ends at x = right, its top at y = top."""
    x = right - actions_width(role)
    out = []
    for name, tooltip in ROLE_ACTIONS.get(role, ()):
        out.append(MessageAction(name, tooltip, QRect(x, top, ACTION_SIZE, ACTION_SIZE)))
        x += ACTION_SIZE + ACTION_GAP
    return out


class ActionPainter:
    """Paints action buttons; keeps the tinted icons it made (a handful: names x colours)."""

    def __init__(self) -> None:
        self._icons: dict[tuple[str, int, float], QPixmap] = {}

    def _icon(self, name: str, color: QColor, ratio: float) -> QPixmap:
        key = (name, color.rgba(), ratio)
        pixmap = self._icons.get(key)
        if pixmap is None:
            pixmap = self._icons[key] = tinted_pixmap(name, QSize(ICON_SIZE, ICON_SIZE), color, ratio)
        return pixmap

    def paint(
        self,
        painter: QPainter,
        actions: list[MessageAction],
        theme: Theme,
        hovered: str = "",
        hidden: frozenset[str] = frozenset(),
    ) -> None:
        device = painter.device()
        ratio = device.devicePixelRatioF() if device is not None else 1.0
        for action in actions:
            if action.name in hidden:
                continue
            if action.name == hovered:
                painter.setPen(Qt.PenStyle.NoPen)
                painter.setBrush(blend(theme.base, theme.text, 0.1))
                painter.drawRoundedRect(QRectF(action.rect), 6, 6)
            color = theme.text if action.name == hovered else theme.muted
            offset = (ACTION_SIZE - ICON_SIZE) // 2
            painter.drawPixmap(action.rect.topLeft() + QPoint(offset, offset), self._icon(action.name, color, ratio))
