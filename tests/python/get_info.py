#!/usr/bin/env python3
"""Call orchestrator.v1.SystemService/GetInfo from Python and print the answer as JSON.

Generates the stubs from proto/ with grpc_tools into a temporary directory, so
the test always uses the protos as they are in the tree. Needs the PyPI
packages grpcio and grpcio-tools.

    python3 tests/python/get_info.py --proto-dir proto --server 127.0.0.1:7400
"""

import argparse

import grpc
from google.protobuf import json_format

from stubs import generated


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proto-dir", required=True)
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    with generated(args.proto_dir) as load:
        system_pb2 = load("orchestrator.v1.system_pb2")
        system_pb2_grpc = load("orchestrator.v1.system_pb2_grpc")
        with grpc.insecure_channel(args.server) as channel:
            stub = system_pb2_grpc.SystemServiceStub(channel)
            response = stub.GetInfo(system_pb2.GetInfoRequest(), timeout=args.timeout)
    print(json_format.MessageToJson(response, indent=None))


if __name__ == "__main__":
    main()
