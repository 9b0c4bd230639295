"""Regenerate the checked-in gRPC code of proto/faceaudit/v1 into service/faceaudit/v1.

    python -m faceaudit.server.codegen [--out DIR]

Run it after editing a .proto file and commit the result; tests/server/test_codegen.py fails when
the checked-in code differs from what this produces. Needs grpcio-tools (the `test` extra).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # repository root: service/faceaudit/server/ -> ../../..
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "service"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "faceaudit" / "v1").glob("*.proto"))


def generate(out: Path = OUT_ROOT) -> list[Path]:
    """Run protoc on every proto file; return the generated files (under out/faceaudit/v1)."""
    from grpc_tools import protoc  # the test extra: serving needs only the generated code

    well_known = resources.files("grpc_tools") / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}",
            f"--pyi_out={out}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sorted(p for p in (out / "faceaudit" / "v1").iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_ROOT, help="root to write faceaudit/v1/*_pb2*.py under")
    args = parser.parse_args(argv)
    (args.out / "faceaudit" / "v1").mkdir(parents=True, exist_ok=True)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
