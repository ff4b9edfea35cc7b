#!/usr/bin/env python3
"""Call orchestrator.v1.SystemService/GetInfo from Python and print the answer as JSON.

Generates the stubs from proto/ with grpc_tools into a temporary directory, so
the test always uses the protos as they are in the tree. Needs the PyPI
packages grpcio and grpcio-tools.

    python3 tests/python/get_info.py --proto-dir proto --server 127.0.0.1:7400
"""

import argparse
import importlib
import os
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc


def generate_stubs(proto_dir, out_dir):
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    protos = []
    for base, _dirs, files in os.walk(proto_dir):
        protos += [os.path.relpath(os.path.join(base, f), proto_dir) for f in files if f.endswith(".proto")]
    args = ["grpc_tools.protoc", f"-I{proto_dir}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"] + sorted(protos)
    if protoc.main(args) != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto_dir}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out_dir:
        generate_stubs(os.path.abspath(args.proto_dir), out_dir)
        sys.path.insert(0, out_dir)
        system_pb2 = importlib.import_module("orchestrator.v1.system_pb2")
        system_pb2_grpc = importlib.import_module("orchestrator.v1.system_pb2_grpc")
        with grpc.insecure_channel(args.server) as channel:
            stub = system_pb2_grpc.SystemServiceStub(channel)
            response = stub.GetInfo(system_pb2.GetInfoRequest(), timeout=args.timeout)
    print(json_format.MessageToJson(response, indent=None))


if __name__ == "__main__":
    main()
