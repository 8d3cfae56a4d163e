"""`make demo` keeps the web UI up until Enter only where someone can press it."""

from __future__ import annotations

import io

from devcloud import demo


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_demo_waits_only_on_a_terminal_and_without_no_wait():
    assert demo.should_wait(False, Terminal())
    assert not demo.should_wait(True, Terminal())
    assert not demo.should_wait(False, io.StringIO()), "CI: stdin is not a terminal"


def test_no_wait_is_an_option_and_waiting_the_default():
    assert demo.parse_args(["--no-wait"]).no_wait
    assert not demo.parse_args([]).no_wait


def test_show_ui_prints_the_url_keeps_the_key_private_and_returns_without_waiting(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    monkeypatch.setattr("builtins.input", lambda *_: (_ for _ in ()).throw(AssertionError))
    endpoints = {"api_url": "http://127.0.0.1:1234", "ui_url": "http://127.0.0.1:1234/ui/"}
    demo.show_ui(endpoints, "bigeye_pak_secret", wait=False)
    out = capsys.readouterr().out
    assert "http://127.0.0.1:1234/ui/" in out and "bigeye_pak_secret" not in out
    key_file = tmp_path / "admin.key"
    assert key_file.read_text() == "bigeye_pak_secret\n"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_show_ui_waits_for_enter_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_DIR", tmp_path)
    prompts = []
    monkeypatch.setattr("builtins.input", prompts.append)
    demo.show_ui({"api_url": "http://127.0.0.1:1", "ui_url": None}, "k", wait=True)
    assert len(prompts) == 1 and "Enter" in prompts[0]
