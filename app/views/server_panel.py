"""The Server panel (View -> Server): serve the loaded model to other apps over an OpenAI-compatible API.

Lays out what the controller gives it and emits what the user asks; it never starts a server itself.
Like LM Studio's server tab: an on/off switch, where to listen, the address to copy, what runs now,
and the last requests.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.views.figures import DASH

LOG_ROWS = 50  # the newest requests; the log file keeps everything
LOG_COLUMNS = ("Time", "Endpoint", "Tokens", "tok/s", "Status")
PANEL_WIDTH = 430  # the log's five columns with /v1/chat/completions in full


class ServerPanel(QDockWidget):
    sig_switch = Signal(bool)
    """on (start serving with the fields' host, port and key) or off"""
    sig_copy_address = Signal(str)
    """the address shown, for the clipboard"""
    sig_fields_edited = Signal()
    """host or key changed: the controller says whether they can serve (set_problem)"""

    def __init__(self) -> None:
        super().__init__("Server")
        self.setObjectName("serverPanel")  # the window's saved layout names docks by this
        self.toggleViewAction().setText("&Server")
        body = QWidget()
        column = QVBoxLayout(body)

        switch_row = QHBoxLayout()
        self.state_label = QLabel()
        self.state_label.setAccessibleName("Server state")
        self.switch = QPushButton()
        self.switch.setCheckable(True)
        self.switch.setAccessibleName("Serve the loaded model")
        switch_row.addWidget(self.state_label, 1)
        switch_row.addWidget(self.switch)
        column.addLayout(switch_row)

        form = QFormLayout()
        self.host_edit = QLineEdit()
        self.host_edit.setAccessibleName("Host")
        self.host_edit.setToolTip("127.0.0.1: only this computer; 0.0.0.0: every network it is on (needs an API key)")
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setAccessibleName("Port")
        self.key_edit = QLineEdit()
        self.key_edit.setAccessibleName("API key")
        self.key_edit.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        self.key_edit.setPlaceholderText("none (clients send any key)")
        form.addRow("Host", self.host_edit)
        form.addRow("Port", self.port_spin)
        form.addRow("API key", self.key_edit)
        column.addLayout(form)
        self.problem_label = QLabel()  # why the switch cannot turn on, said where the fields are
        self.problem_label.setObjectName("serverProblem")
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #c0392b;")
        column.addWidget(self.problem_label)

        address_row = QHBoxLayout()
        self.address_edit = QLineEdit()
        self.address_edit.setReadOnly(True)
        self.address_edit.setAccessibleName("Server address")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setAccessibleName("Copy the server address")
        address_row.addWidget(self.address_edit, 1)
        address_row.addWidget(self.copy_button)
        column.addWidget(QLabel("Address (OpenAI base URL)"))
        column.addLayout(address_row)

        self.in_flight_label = QLabel()
        self.in_flight_label.setAccessibleName("Requests in flight")
        column.addWidget(self.in_flight_label)

        column.addWidget(QLabel("Last requests"))
        self.log = QTreeWidget()
        self.log.setAccessibleName("Request log")
        self.log.setRootIsDecorated(False)
        self.log.setHeaderLabels(list(LOG_COLUMNS))
        self.log.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        header = self.log.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)  # the endpoint whole, never "…"
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)  # the spare width goes to the endpoint
        column.addWidget(self.log, 1)
        self.setWidget(body)
        self.setMinimumWidth(PANEL_WIDTH)

        self.switch.toggled.connect(self._on_switch)
        self.copy_button.clicked.connect(lambda: self.sig_copy_address.emit(self.address_edit.text()))
        self.host_edit.textChanged.connect(self.sig_fields_edited)
        self.key_edit.textChanged.connect(self.sig_fields_edited)
        self.set_running(None)
        self.set_in_flight(0, False)

    # What the controller shows ------------------------------------------------------------

    def set_fields(self, host: str, port: int, api_key: str) -> None:
        self.host_edit.setText(host)
        self.port_spin.setValue(port)
        self.key_edit.setText(api_key)

    def fields(self) -> tuple[str, int, str]:
        """host, port, API key ("" none) as typed."""
        return self.host_edit.text().strip(), self.port_spin.value(), self.key_edit.text().strip()

    def set_running(self, url: str | None) -> None:
        """The server listens at `url` (its API under /v1), or is off (None)."""
        running = url is not None
        self.switch.blockSignals(True)
        self.switch.setChecked(running)
        self.switch.blockSignals(False)
        self.switch.setText("Stop" if running else "Start")
        self.state_label.setText("● Running" if running else "○ Off")
        self.state_label.setStyleSheet("color: #27ae60; font-weight: bold;" if running else "")
        for field in (self.host_edit, self.port_spin, self.key_edit):
            field.setEnabled(not running)
        self.address_edit.setText(f"{url}/v1" if url else "")
        self.address_edit.setPlaceholderText("" if running else "Start the server to get an address")
        self.copy_button.setEnabled(running)
        self.switch.setEnabled(True)

    def set_problem(self, text: str, blocks_start: bool = False) -> None:
        """What is wrong with the fields or why the server did not start ("" none), said under the
        fields; blocks_start keeps the switch off until it is fixed."""
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))
        if not self.switch.isChecked():
            self.switch.setEnabled(not blocks_start)

    def set_in_flight(self, n: int, serving: bool) -> None:
        """Requests waiting or running, and whether the model is on one now."""
        text = f"Requests in flight: {n}"
        self.in_flight_label.setText(text + (" (the model is serving one)" if serving else ""))

    def add_request(
        self, started: float, endpoint: str, status: int, n_tokens: int, tokens_per_s: float | None
    ) -> None:
        """A request as it ended, newest on top."""
        when = time.strftime("%H:%M:%S", time.localtime(started))
        speed = f"{tokens_per_s:.1f}" if tokens_per_s else DASH
        item = QTreeWidgetItem([when, endpoint, f"{n_tokens:,}", speed, str(status)])
        for i in (2, 3, 4):
            item.setTextAlignment(i, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if status >= 400:
            item.setToolTip(4, "an error: the log folder's stride.log says why")
        self.log.insertTopLevelItem(0, item)
        while self.log.topLevelItemCount() > LOG_ROWS:
            self.log.takeTopLevelItem(LOG_ROWS)

    # Inside -----------------------------------------------------------------------------

    def _on_switch(self, on: bool) -> None:
        self.switch.setText("Stop" if on else "Start")  # the controller confirms with set_running
        self.sig_switch.emit(on)
