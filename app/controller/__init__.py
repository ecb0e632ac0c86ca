"""The chat controller (see chat.py), in parts: base, models, conversations, replies, chat."""

from app.controller.base import ActiveReply
from app.controller.chat import ChatController

__all__ = ["ActiveReply", "ChatController"]
