"""Python client of the faceaudit gRPC service (see clients/README.md).

    from faceaudit_client import Client, Pair
    with Client("localhost:50051") as client:
        client.register_model("face.onnx")
        saliency = client.explain("face", "probe.png", method="occlusion", target=Pair("mate.png"))
"""

from faceaudit_client.client import Client, GamePoint, Item, ModelInfo
from faceaudit_client.convert import Pair, array_to_tensor, tensor_to_array
from faceaudit_client.errors import (
    AlreadyExists, Cancelled, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument, MissingMapFiles,
    NotFound, ResourceExhausted, ServiceError, Unauthenticated, Unavailable,
)

__all__ = [
    "AlreadyExists", "Cancelled", "Client", "DeadlineExceeded", "FailedPrecondition", "GamePoint", "Internal",
    "InvalidArgument", "Item", "MissingMapFiles", "ModelInfo", "NotFound", "Pair", "ResourceExhausted", "ServiceError",
    "Unauthenticated", "Unavailable", "array_to_tensor", "tensor_to_array",
]
