"""Pictures through the window: attach (button, drop, paste), send, the reply that reads them, the
store, the transcript, export and import, and every refusal, with the fixture model and projector."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QByteArray, QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QImage, QImageWriter
from PySide6.QtWidgets import QFileDialog, QMessageBox, QToolButton
from pytestqt.qtbot import QtBot

from app.controller.replies import RepliesPart
from app.views.pictures import LONGEST_EDGE, PictureDialog
from engine.api import DEMO_NAME
from engine.qt_worker import ReplyResult
from tests.app.conftest import AppHarness
from tests.fixtures import vision as vf
from tests.fixtures.vision import VisionPair, vision_pair  # noqa: F401 (a fixture)


def vision_app(make_app: Callable[..., AppHarness], pair: VisionPair, **settings: object) -> AppHarness:
    return make_app(str(pair.model), projector_path=str(pair.projector), n_ctx=1024, max_tokens=4, **settings)


def first_word(colour: int) -> str:
    """The text a reply to a picture of this colour (0 red, 1 green, 2 blue) starts with."""
    o = vf.vision_oracle()
    return o.text_of([vf.colour_word_successors(o)[colour]]).decode()


def send(qtbot: QtBot, app: AppHarness, text: str) -> ReplyResult:
    app.window.composer.edit.setPlainText(text)
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=60_000) as blocker:
        app.window.composer.send_button.click()
    result = blocker.args[0]
    assert isinstance(result, ReplyResult), app.window.notice.label.text()
    return result


def picture_files(app: AppHarness) -> list[Path]:
    return sorted((app.folder / "images").rglob("*.png"))


def notice(app: AppHarness) -> str:
    return app.window.notice.label.text() if app.window.notice.isVisible() else ""


def test_a_picture_is_attached_sent_read_stored_and_shown(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = vision_app(make_app, vision_pair)
    assert app.controller.loaded is not None and app.controller.loaded.reads_pictures
    red = vf.write_png(tmp_path / "red.png", vf.solid(vf.RED))
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *_a, **_k: ([str(red)], ""))
    app.window.composer.attach_button.click()
    assert [p.name for p in app.window.composer.pictures] == ["red.png"] and app.window.composer.strip.isVisible()

    result = send(qtbot, app, "What colour?")
    assert result.reasoning.startswith(first_word(0))  # the reply depends on the picture
    assert result.stats.n_image_tokens > 0 and result.stats.image_encode_seconds > 0
    assert app.window.composer.pictures == [] and not app.window.composer.strip.isVisible()  # sent, cleared
    panel = app.window.stats_panel
    assert panel.picture_value.isVisible() and panel.picture_caption.isVisible()
    assert f"{result.stats.n_image_tokens:,} tokens" in panel.picture_value.text()
    assert "Picture encoding: " in panel.displayed_text()

    cid = app.controller.conversation_id
    assert cid is not None
    user = app.store.messages(cid)[0]
    [stored] = picture_files(app)
    assert user.images == (stored.stem,) and stored.parent.name == stored.stem[:2]
    assert QImage(str(stored)).size() == QImage(str(red)).size()
    assert app.store.get_conversation(cid).title == "What colour?"

    # The transcript shows it in the user's bubble; clicking it opens it larger.
    view = app.window.transcript
    layout = view.delegate.layout(0)
    [(digest, rect)] = layout.pictures
    assert digest == stored.stem and layout.bubble is not None and layout.bubble.contains(rect)
    spoken = view.transcript_model.data(view.transcript_model.index(0), Qt.ItemDataRole.AccessibleTextRole)
    assert spoken == "You, 1 picture (click to view larger): What colour?"
    with qtbot.waitSignal(view.sig_picture_shown) as shown:
        index_rect = view.visualRect(view.transcript_model.index(0))
        click = index_rect.topLeft() + rect.center() + QPoint(view.content_shift(), 0)
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=click)
    dialog = shown.args[0]
    assert isinstance(dialog, PictureDialog) and dialog.isVisible()
    assert dialog.picture_label.pixmap().size() == QImage(str(red)).size()
    dialog.close()

    # The next turn keeps the picture in the prompt: a follow-up still reads red.
    assert send(qtbot, app, "And now?").stats.n_image_tokens > 0


def test_two_pictures_two_replies_and_edit_brings_the_picture_back(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = vision_app(make_app, vision_pair)
    blue = vf.write_png(tmp_path / "blue.png", vf.solid(vf.BLUE))
    app.window.composer.attach_files([blue])
    assert send(qtbot, app, "").reasoning.startswith(first_word(2))  # pictures alone may be sent
    cid = app.controller.conversation_id
    assert cid is not None and app.store.get_conversation(cid).title == "Picture"

    app.controller.edit_message(0)  # edit and resend: the text and the picture return to the composer
    assert [p.image.size() for p in app.window.composer.pictures] == [QImage(str(blue)).size()]
    assert app.store.messages(cid) == []
    assert len(picture_files(app)) == 0  # the row went; the composer holds the picture itself
    assert send(qtbot, app, "again").reasoning.startswith(first_word(2))
    assert len(picture_files(app)) == 1


def test_drop_and_paste_attach_and_refusals_keep_the_draft(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = vision_app(make_app, vision_pair)
    composer = app.window.composer
    composer.edit.setPlainText("my draft")
    green = vf.write_png(tmp_path / "green.png", vf.solid(vf.GREEN))
    dropped = QMimeData()
    dropped.setUrls([QUrl.fromLocalFile(str(green))])
    composer.edit.insertFromMimeData(dropped)
    pasted = QMimeData()
    image = QImage(40, 30, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.red)
    pasted.setImageData(image)
    composer.edit.insertFromMimeData(pasted)
    assert [p.name for p in composer.pictures] == ["green.png", "pasted picture"]
    assert composer.edit.toPlainText() == "my draft"  # no path pasted as text

    png = vf.png_bytes(vf.solid(vf.RED, 300, 200))
    cases = {
        "notes.txt": (b"plain words", "notes.txt is not a picture Stride can read"),
        "cut.png": (png[: len(png) // 2], "cut.png is damaged or cut short"),
        "photo.heic": (b"\x00\x00\x00\x18ftypheic" + bytes(64), "photo.heic: Stride cannot read HEIC pictures"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with qtbot.waitSignal(app.window.sig_picture_refused) as refused:
            composer.attach_files([path])
        assert refused.args[0].startswith(message)
        assert message in notice(app)
    assert len(composer.pictures) == 2 and composer.edit.toPlainText() == "my draft"

    # A thumbnail's remove button takes it out.
    first_remove = composer.strip.findChildren(QToolButton, "removeAttachment")[0]
    assert first_remove.accessibleName() == "Remove green.png"
    first_remove.click()
    assert [p.name for p in composer.pictures] == ["pasted picture"]


def test_a_huge_picture_is_decoded_already_scaled(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    app = vision_app(make_app, vision_pair)
    big = QImage(8000, 6000, QImage.Format.Format_RGB32)
    big.fill(Qt.GlobalColor.blue)
    path = tmp_path / "big.jpg"
    writer = QImageWriter(str(path), QByteArray(b"jpeg"))
    writer.setQuality(30)
    assert writer.write(big)
    del big
    app.window.composer.attach_files([path])
    [picture] = app.window.composer.pictures
    assert (picture.image.width(), picture.image.height()) == (LONGEST_EDGE, 2268)


def test_without_a_projector_nothing_attaches_and_old_pictures_stay(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    app = vision_app(make_app, vision_pair, folder=folder)
    app.window.composer.attach_files([vf.write_png(tmp_path / "red.png", vf.solid(vf.RED))])
    send(qtbot, app, "colour?")
    cid = app.controller.conversation_id
    app.close()

    # The same data folder, the model loaded without its projector (the settings name none, none beside it).
    alone = tmp_path / "alone" / vision_pair.model.name
    alone.parent.mkdir()
    shutil.copyfile(vision_pair.model, alone)
    text_only = make_app(str(alone), folder=folder, projector_path="", n_ctx=1024, max_tokens=4)
    assert text_only.controller.loaded is not None and not text_only.controller.loaded.reads_pictures
    assert text_only.controller.conversation_id == cid
    layout = text_only.window.transcript.delegate.layout(0)
    assert len(layout.pictures) == 1  # still shown
    assert not text_only.window.transcript_model.thumbnail(layout.pictures[0][0]).isNull()

    text_only.window.composer.attach_files([tmp_path / "red.png"])
    assert text_only.window.composer.pictures == []
    assert "loaded without a vision file" in notice(text_only)

    text_only.window.composer.edit.setPlainText("follow-up")
    text_only.window.composer.send_button.click()  # refused before anything is saved or sent
    assert "This conversation has pictures" in notice(text_only)
    assert text_only.window.composer.edit.toPlainText() == "follow-up"
    assert len(text_only.store.messages(cid)) == 2 and text_only.controller.active is None  # type: ignore[arg-type]


def test_delete_export_and_import_carry_the_pictures(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = vision_app(make_app, vision_pair)
    app.window.composer.attach_files([vf.write_png(tmp_path / "blue.png", vf.solid(vf.BLUE))])
    send(qtbot, app, "colour?")
    cid = app.controller.conversation_id
    assert cid is not None
    [stored] = picture_files(app)

    md = tmp_path / "out" / "My chat.md"
    md.parent.mkdir()
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(md), ""))
    app.controller.export_conversation(cid, "md")
    copied = md.with_name("My chat_files") / stored.name
    assert copied.read_bytes() == stored.read_bytes()
    assert f"![Picture 1](My%20chat_files/{stored.name})" in md.read_text(encoding="utf-8")

    exported = tmp_path / "out" / "chat.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *_a, **_k: (str(exported), ""))
    app.controller.export_conversation(cid, "json")
    assert json.loads(exported.read_text(encoding="utf-8"))["messages"][0]["images"][0]["media_type"] == "image/png"

    monkeypatch.setattr(QMessageBox, "question", lambda *_a, **_k: QMessageBox.StandardButton.Yes)
    app.controller.delete_conversation(cid)
    assert picture_files(app) == []  # no message names it any more

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *_a, **_k: (str(exported), ""))
    app.controller.import_conversation()
    imported = app.controller.conversation_id
    assert imported is not None and imported != cid
    assert picture_files(app) == [stored]  # back under the same content hash
    assert app.store.messages(imported)[0].images == (stored.stem,)
    # And the imported picture is read again: the reply still follows it.
    assert send(qtbot, app, "and?").reasoning.startswith(first_word(2))


def test_the_demo_model_says_how_to_get_a_vision_file(qtbot: QtBot, make_app: Callable[..., AppHarness]) -> None:
    app = make_app(DEMO_NAME)
    app.window.composer.attach_button.click()  # no file dialog: the notice instead
    assert "vision file" in notice(app) and app.window.composer.pictures == []
    app.window.composer.edit.setPlainText("Hello")
    with qtbot.waitSignal(app.controller.sig_reply_finished, timeout=60_000):
        app.window.composer.send_button.click()
    assert not app.window.stats_panel.picture_value.isVisible()  # a reply without pictures has no such row
    assert "Picture encoding" not in app.window.stats_panel.displayed_text()
    assert isinstance(app.controller, RepliesPart)


@pytest.mark.parametrize("size", [(64, 48), (4000, 100)])
def test_pictures_keep_their_shape(size: tuple[int, int], tmp_path: Path, qtbot: QtBot) -> None:
    from app.views.pictures import read_picture

    path = vf.write_png(tmp_path / "p.png", np.zeros((size[1], size[0], 3), dtype=np.uint8))
    picture = read_picture(path)
    assert picture.image.width() == min(size[0], LONGEST_EDGE)
    assert abs(picture.image.width() / picture.image.height() - size[0] / size[1]) < 0.05 * size[0] / size[1]


def test_a_vision_file_beside_the_model_is_proposed(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
) -> None:
    app = make_app(str(vision_pair.model), n_ctx=1024)  # Settings name no vision file
    assert app.controller.loaded is not None and app.controller.loaded.reads_pictures
    assert app.controller.settings.projector_path == ""  # still "beside the model": moving both keeps working
    assert "reads pictures" in app.window.model_label.toolTip() and app.window.composer.reads_pictures


def test_a_vision_file_for_another_model_beside_it_does_not_stop_the_load(
    qtbot: QtBot,
    make_app: Callable[..., AppHarness],
    vision_pair: VisionPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / vision_pair.model.name
    shutil.copyfile(vision_pair.model, model)
    vf.build_projector(folder / "mmproj-other.gguf", n_embd_out=256)
    app = make_app(str(model), n_ctx=1024)
    assert app.controller.loaded is not None and not app.controller.loaded.reads_pictures
    assert notice(app).startswith("Loaded without pictures: mmproj-other.gguf makes image tokens 256 wide")
