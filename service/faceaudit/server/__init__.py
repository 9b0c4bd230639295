"""The gRPC service: the only layer that imports grpc and the generated *_pb2 modules."""
