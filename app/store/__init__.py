"""The conversation store (SQLite), one job a module:

- records.py: the records it holds (Message, Conversation, ConversationSummary) and StoreError;
- schema.py: the database file: opening, schema and migrations, search index, damage recovery;
- conversations.py: ConversationStore: conversations, messages, search;
- exchange.py: Markdown and JSON export, and checking a JSON export before import.
"""

from app.store.conversations import ConversationStore
from app.store.records import Conversation, ConversationSummary, Message, StoreError
from app.store.schema import SCHEMA_VERSION, default_db_path

__all__ = [
    "SCHEMA_VERSION",
    "Conversation",
    "ConversationStore",
    "ConversationSummary",
    "Message",
    "StoreError",
    "default_db_path",
]
