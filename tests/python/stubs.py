"""Generate Python gRPC stubs from the tree's proto/ with grpc_tools.

Shared by the cross-language test scripts, so every script uses the protos as
they are in the tree (never a stale copy).
"""

import importlib
import os
import sys
import tempfile
from contextlib import contextmanager

from grpc_tools import protoc


def _generate(proto_dir, out_dir):
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    protos = []
    for base, _dirs, files in os.walk(proto_dir):
        protos += [os.path.relpath(os.path.join(base, f), proto_dir) for f in files if f.endswith(".proto")]
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + sorted(protos)
    if protoc.main(args) != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto_dir}")


@contextmanager
def generated(proto_dir):
    """Generates the stubs into a temporary directory and yields an importer:
    `load("etcd.api.etcdserverpb.rpc_pb2")` imports one generated module."""
    with tempfile.TemporaryDirectory() as out_dir:
        _generate(os.path.abspath(proto_dir), out_dir)
        sys.path.insert(0, out_dir)
        try:
            yield importlib.import_module
        finally:
            sys.path.remove(out_dir)
