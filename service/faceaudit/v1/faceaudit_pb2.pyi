from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data")
    class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        DTYPE_UNSPECIFIED: _ClassVar[Tensor.DType]
        FLOAT32: _ClassVar[Tensor.DType]
        FLOAT16: _ClassVar[Tensor.DType]
    DTYPE_UNSPECIFIED: Tensor.DType
    FLOAT32: Tensor.DType
    FLOAT16: Tensor.DType
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: Tensor.DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: _Optional[_Union[Tensor.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "pixels", "landmarks")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    pixels: Tensor
    landmarks: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, encoded: _Optional[bytes] = ..., pixels: _Optional[_Union[Tensor, _Mapping]] = ..., landmarks: _Optional[_Iterable[float]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("class_index", "predicted_class", "pair")
    CLASS_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_CLASS_FIELD_NUMBER: _ClassVar[int]
    PAIR_FIELD_NUMBER: _ClassVar[int]
    class_index: int
    predicted_class: bool
    pair: MatePair
    def __init__(self, class_index: _Optional[int] = ..., predicted_class: _Optional[bool] = ..., pair: _Optional[_Union[MatePair, _Mapping]] = ...) -> None: ...

class MatePair(_message.Message):
    __slots__ = ("mate", "non_mate")
    MATE_FIELD_NUMBER: _ClassVar[int]
    NON_MATE_FIELD_NUMBER: _ClassVar[int]
    mate: Image
    non_mate: Image
    def __init__(self, mate: _Optional[_Union[Image, _Mapping]] = ..., non_mate: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "phase", "map_index")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MAP_INDEX_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    phase: str
    map_index: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., phase: _Optional[str] = ..., map_index: _Optional[int] = ...) -> None: ...

class RegisterChunk(_message.Message):
    __slots__ = ("name", "spec", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _struct_pb2.Struct
    data: bytes
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RegisterFromRepositoryRequest(_message.Message):
    __slots__ = ("name", "spec")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UnregisterRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UnregisterResponse(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "sha256", "size_bytes", "kind", "height", "width", "output_size", "white_box", "batch_mode", "max_batch", "details")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    WHITE_BOX_FIELD_NUMBER: _ClassVar[int]
    BATCH_MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    sha256: str
    size_bytes: int
    kind: str
    height: int
    width: int
    output_size: int
    white_box: bool
    batch_mode: str
    max_batch: int
    details: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., kind: _Optional[str] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., output_size: _Optional[int] = ..., white_box: _Optional[bool] = ..., batch_mode: _Optional[str] = ..., max_batch: _Optional[int] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ("methods",)
    METHODS_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("name", "kinds", "black_box", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    BLACK_BOX_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    black_box: bool
    options: _containers.RepeatedCompositeFieldContainer[MethodOption]
    def __init__(self, name: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., black_box: _Optional[bool] = ..., options: _Optional[_Iterable[_Union[MethodOption, _Mapping]]] = ...) -> None: ...

class MethodOption(_message.Message):
    __slots__ = ("name", "type", "default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    default: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default: _Optional[str] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("model", "method", "options", "images", "targets")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    model: str
    method: str
    options: _struct_pb2.Struct
    images: _containers.RepeatedCompositeFieldContainer[Image]
    targets: _containers.RepeatedCompositeFieldContainer[Target]
    def __init__(self, model: _Optional[str] = ..., method: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., targets: _Optional[_Iterable[_Union[Target, _Mapping]]] = ...) -> None: ...

class SaliencyMap(_message.Message):
    __slots__ = ("image_index", "target_index", "values", "method", "forward_passes", "signed", "frame", "metadata")
    IMAGE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TARGET_INDEX_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FORWARD_PASSES_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    image_index: int
    target_index: int
    values: Tensor
    method: str
    forward_passes: int
    signed: bool
    frame: str
    metadata: _struct_pb2.Struct
    def __init__(self, image_index: _Optional[int] = ..., target_index: _Optional[int] = ..., values: _Optional[_Union[Tensor, _Mapping]] = ..., method: _Optional[str] = ..., forward_passes: _Optional[int] = ..., signed: _Optional[bool] = ..., frame: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("maps",)
    MAPS_FIELD_NUMBER: _ClassVar[int]
    maps: _containers.RepeatedCompositeFieldContainer[SaliencyMap]
    def __init__(self, maps: _Optional[_Iterable[_Union[SaliencyMap, _Mapping]]] = ...) -> None: ...

class ExplainEvent(_message.Message):
    __slots__ = ("progress", "map")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    map: SaliencyMap
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., map: _Optional[_Union[SaliencyMap, _Mapping]] = ...) -> None: ...

class ListGamesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGamesResponse(_message.Message):
    __slots__ = ("games",)
    GAMES_FIELD_NUMBER: _ClassVar[int]
    games: _containers.RepeatedCompositeFieldContainer[GameInfo]
    def __init__(self, games: _Optional[_Iterable[_Union[GameInfo, _Mapping]]] = ...) -> None: ...

class GameInfo(_message.Message):
    __slots__ = ("name", "kinds", "inputs", "needs", "options")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kinds: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    needs: _containers.RepeatedScalarFieldContainer[str]
    options: _containers.RepeatedCompositeFieldContainer[MethodOption]
    def __init__(self, name: _Optional[str] = ..., kinds: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[str]] = ..., needs: _Optional[_Iterable[str]] = ..., options: _Optional[_Iterable[_Union[MethodOption, _Mapping]]] = ...) -> None: ...

class EvaluateItem(_message.Message):
    __slots__ = ("image", "target", "maps", "region", "name")
    class MapsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    image: Image
    target: Target
    maps: _containers.MessageMap[str, Tensor]
    region: Tensor
    name: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., maps: _Optional[_Mapping[str, Tensor]] = ..., region: _Optional[_Union[Tensor, _Mapping]] = ..., name: _Optional[str] = ...) -> None: ...

class ImagePair(_message.Message):
    __slots__ = ("first", "second", "genuine")
    FIRST_FIELD_NUMBER: _ClassVar[int]
    SECOND_FIELD_NUMBER: _ClassVar[int]
    GENUINE_FIELD_NUMBER: _ClassVar[int]
    first: int
    second: int
    genuine: bool
    def __init__(self, first: _Optional[int] = ..., second: _Optional[int] = ..., genuine: _Optional[bool] = ...) -> None: ...

class PartMasks(_message.Message):
    __slots__ = ("masks",)
    MASKS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, masks: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("model", "game", "options", "items", "methods", "images", "pairs", "parts")
    class PartsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: PartMasks
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[PartMasks, _Mapping]] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GAME_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    game: str
    options: _struct_pb2.Struct
    items: _containers.RepeatedCompositeFieldContainer[EvaluateItem]
    methods: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    pairs: _containers.RepeatedCompositeFieldContainer[ImagePair]
    parts: _containers.MessageMap[str, PartMasks]
    def __init__(self, model: _Optional[str] = ..., game: _Optional[str] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., items: _Optional[_Iterable[_Union[EvaluateItem, _Mapping]]] = ..., methods: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., pairs: _Optional[_Iterable[_Union[ImagePair, _Mapping]]] = ..., parts: _Optional[_Mapping[str, PartMasks]] = ...) -> None: ...

class GamePoint(_message.Message):
    __slots__ = ("game", "series", "index", "x", "values")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    GAME_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    game: str
    series: str
    index: int
    x: float
    values: _containers.ScalarMap[str, float]
    def __init__(self, game: _Optional[str] = ..., series: _Optional[str] = ..., index: _Optional[int] = ..., x: _Optional[float] = ..., values: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvaluateEvent(_message.Message):
    __slots__ = ("progress", "point", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    POINT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    point: GamePoint
    result: _struct_pb2.Struct
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., point: _Optional[_Union[GamePoint, _Mapping]] = ..., result: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("model", "dataset", "methods", "games", "options", "group_column", "return_maps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    GAMES_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    GROUP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    RETURN_MAPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    dataset: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    games: _containers.RepeatedScalarFieldContainer[str]
    options: _struct_pb2.Struct
    group_column: str
    return_maps: bool
    def __init__(self, model: _Optional[str] = ..., dataset: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., games: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., group_column: _Optional[str] = ..., return_maps: _Optional[bool] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("path", "data", "last")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    last: bool
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("progress", "summary", "file")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    progress: Progress
    summary: _struct_pb2.Struct
    file: FileChunk
    def __init__(self, progress: _Optional[_Union[Progress, _Mapping]] = ..., summary: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., file: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...
