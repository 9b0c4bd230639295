"""faceaudit: explain and audit ONNX face models.

Layers, each importing only from those below it:
    cli, server            entry points (server is the only place that knows gRPC)
    model_info             what `inspect` reports about a model
    metrics                faithfulness games over saliency maps
    methods                one file per explanation method
    whitebox, alignment    graph rewriting and backward rules; canonical frames for CIS/CMS
    engine                 onnxruntime sessions, batch preparation, the streaming scorer
    images, models         image decoding/preprocessing; ONNX loading, ModelSpec, graph queries
    errors                 domain errors
"""

__version__ = "0.1.0"
