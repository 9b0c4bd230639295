"""Reference derivatives by central finite differences through onnxruntime, for gradient tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def central_differences(model: onnx.ModelProto, x: np.ndarray, seed: np.ndarray, h: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """∂(seed_b · y_b)/∂x_b for every element of every image b, and a kink indicator per element.

    Runs the real model with onnxruntime on x_b ± h·e_i for all i at once (one batch per image).
    The kink indicator |(f(x+h) − f(x)) − (f(x) − f(x−h))| / h is ~0 where f is linear or smooth
    on [x − h, x + h] and large where a Relu or MaxPool switches inside it; there the central
    difference is no derivative and tests skip the element.
    """
    run = session(model)
    size = int(np.prod(x.shape[1:]))
    steps = (np.eye(size) * h).reshape(size, *x.shape[1:])
    estimate, kink = np.empty((len(x), size)), np.empty((len(x), size))
    for b in range(len(x)):
        plus, minus, base = (run.run(None, {"x": batch.astype(x.dtype)})[0].reshape(len(batch), -1) @ seed[b]
                             for batch in (x[b] + steps, x[b] - steps, x[b : b + 1]))
        estimate[b] = (plus - minus) / (2 * h)
        kink[b] = np.abs(plus - 2 * base + minus) / h
    return estimate.reshape(x.shape), kink.reshape(x.shape)
