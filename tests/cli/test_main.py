"""kidneyseg's own process settings (cli.main)."""

from __future__ import annotations

import pytest

from kidneyseg.cli import _plain_pages, main

multiarray = pytest.importorskip("numpy._core.multiarray")


@pytest.fixture
def restore_madvise():  # type: ignore[no-untyped-def]
    before = multiarray._get_madvise_hugepage()
    yield
    multiarray._set_madvise_hugepage(before)


def test_commands_run_without_huge_page_madvise(restore_madvise, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Every command turns numpy's huge-page madvise off (first-touch compaction stalls, docs/prediction.md)."""
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    multiarray._set_madvise_hugepage(True)
    assert main(["models", "--no-flops", "unet2d"]) == 0
    assert multiarray._get_madvise_hugepage() is False


def test_the_users_numpy_setting_is_kept(restore_madvise, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    multiarray._set_madvise_hugepage(True)
    _plain_pages()
    assert multiarray._get_madvise_hugepage() is True
