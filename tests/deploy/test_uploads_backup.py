"""Runs deploy/scripts/{backup_uploads,restore_uploads}.sh on real directories: the local photo store
(ORDER_UPLOAD_ROOT) archived with its checksum, restored by a swap, and refused when tampered."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "deploy" / "scripts"
PHOTO = "orders/00000000-0000-0000-0000-0000000000a1/00000000-0000-0000-0000-0000000000b2/p1.jpg"


def run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / script), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def store(tmp_path: Path) -> Path:
    root = tmp_path / "uploads"
    (root / PHOTO).parent.mkdir(parents=True)
    (root / PHOTO).write_bytes(b"\xff\xd8photo-bytes")
    (root / ".incoming").mkdir()
    (root / ".incoming" / ".upload-x.part").write_bytes(b"half")
    (root / PHOTO).with_name("p2.jpg.upload-y.part").write_bytes(b"half")
    return root


def test_backup_archives_the_photos_with_a_checksum_and_leaves_out_uploads_in_flight(tmp_path: Path) -> None:
    root = store(tmp_path)
    backups = tmp_path / "backups"
    old = backups / "uploads_20200101T000000Z.tar.gz"
    backups.mkdir()
    old.write_bytes(b"old")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))

    result = run("backup_uploads.sh", ORDER_UPLOAD_ROOT=str(root), BACKUP_DIR=str(backups))

    assert result.returncode == 0, result.stderr
    archive = Path(result.stdout.strip())
    with tarfile.open(archive) as tar:
        files = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert files == [f"./{PHOTO}"]
    checksum = (backups / f"{archive.name}.sha256").read_text()
    assert checksum == f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n"
    assert not old.exists(), "archives older than RETENTION_DAYS are pruned"


def test_backup_fails_clearly_without_the_store(tmp_path: Path) -> None:
    missing = run("backup_uploads.sh", ORDER_UPLOAD_ROOT="", BACKUP_DIR=str(tmp_path))
    assert missing.returncode != 0 and "ORDER_UPLOAD_ROOT is not set" in missing.stderr
    absent = run("backup_uploads.sh", ORDER_UPLOAD_ROOT=str(tmp_path / "nope"), BACKUP_DIR=str(tmp_path))
    assert absent.returncode != 0 and "is not a directory" in absent.stderr


def test_restore_swaps_the_archive_in_and_keeps_what_it_replaced(tmp_path: Path) -> None:
    root = store(tmp_path)
    archive = Path(
        run("backup_uploads.sh", ORDER_UPLOAD_ROOT=str(root), BACKUP_DIR=str(tmp_path / "b")).stdout.strip()
    )
    (root / PHOTO).write_bytes(b"overwritten after the backup")

    result = run("restore_uploads.sh", str(archive), ORDER_UPLOAD_ROOT=str(root))

    assert result.returncode == 0, result.stderr
    assert (root / PHOTO).read_bytes() == b"\xff\xd8photo-bytes"
    kept = [p for p in root.iterdir() if p.name.startswith(".before-restore-")]
    assert len(kept) == 1 and (kept[0] / PHOTO).read_bytes() == b"overwritten after the backup"
    assert not [p for p in root.iterdir() if p.name.startswith(".restoring-")]
    again = run("backup_uploads.sh", ORDER_UPLOAD_ROOT=str(root), BACKUP_DIR=str(tmp_path / "c"))
    with tarfile.open(again.stdout.strip()) as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == [f"./{PHOTO}"], (
            "kept copies are not backed up"
        )


def test_restore_refuses_a_tampered_or_unverified_archive(tmp_path: Path) -> None:
    root = store(tmp_path)
    archive = Path(
        run("backup_uploads.sh", ORDER_UPLOAD_ROOT=str(root), BACKUP_DIR=str(tmp_path / "b")).stdout.strip()
    )
    archive.write_bytes(archive.read_bytes() + b"x")
    tampered = run("restore_uploads.sh", str(archive), ORDER_UPLOAD_ROOT=str(root))
    assert tampered.returncode != 0 and "does not verify" in tampered.stderr
    Path(f"{archive}.sha256").unlink()
    unverified = run("restore_uploads.sh", str(archive), ORDER_UPLOAD_ROOT=str(root))
    assert unverified.returncode != 0 and "no checksum" in unverified.stderr
    assert (root / PHOTO).read_bytes() == b"\xff\xd8photo-bytes", "a refused restore changes nothing"


def test_restore_refuses_paths_outside_the_store(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    payload = tmp_path / "payload"
    payload.write_bytes(b"x")
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(payload, arcname="../escaped")
    Path(f"{evil}.sha256").write_text(f"{hashlib.sha256(evil.read_bytes()).hexdigest()}  {evil.name}\n")
    result = run("restore_uploads.sh", str(evil), ORDER_UPLOAD_ROOT=str(tmp_path / "uploads"))
    assert result.returncode != 0 and "'..' paths" in result.stderr
    assert not (tmp_path / "escaped").exists()


def test_restored_photos_belong_to_the_owner_of_the_store(tmp_path: Path) -> None:
    """Run as root (compose's backup container), the restore gives the files the store's owner, so
    media (uid 10001) can keep adding photos in the restored folders."""
    root = store(tmp_path)
    archive = run(
        "backup_uploads.sh", ORDER_UPLOAD_ROOT=str(root), BACKUP_DIR=str(tmp_path / "b")
    ).stdout.strip()
    target = tmp_path / "restored"
    target.mkdir()
    if os.geteuid() == 0:
        os.chown(target, 10001, 10001)
    owner = (target.stat().st_uid, target.stat().st_gid)

    result = run("restore_uploads.sh", archive, ORDER_UPLOAD_ROOT=str(target))

    assert result.returncode == 0, result.stderr
    restored = [target / "orders", *(target / "orders").rglob("*")]
    assert restored and {(p.stat().st_uid, p.stat().st_gid) for p in restored} == {owner}
