"""`make proto`: regenerate the Python stubs beside every .proto; `--check` fails on drift (CI)."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "proto"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *sources,
        ],
        check=True,
        cwd=PROTO,
        env=env,
        capture_output=True,
    )


def generated_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(GENERATED)}


def main() -> int:
    check = "--check" in sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out)
        fresh, current = generated_files(out), generated_files(PROTO)
        if check:
            drift = sorted(fresh ^ current) + sorted(
                f for f in fresh & current if not filecmp.cmp(out / f, PROTO / f, shallow=False)
            )
            if drift:
                print("generated stubs are out of date; run `make proto`:\n  " + "\n  ".join(drift))
                return 1
            print("proto stubs up to date")
            return 0
        for stale in current - fresh:
            (PROTO / stale).unlink()
        for name in fresh:
            shutil.copyfile(out / name, PROTO / name)
        print(f"generated {len(fresh)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
