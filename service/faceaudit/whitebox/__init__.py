"""White-box explanations by ONNX graph rewriting: gradients and excitation backprop without a framework.

Modules (each imports only those above it in this list, plus models/ and engine/):

    signals.py      the signal kinds (gradient, guided, deconv, deeplift, excitation, extended, LRP) and array helpers
    dataflow.py     which nodes a backward pass walks; the constants it reads (SignalGraph)
    rules/          one rule per ONNX operator (base.py: NodeContext, Rule; RULES in __init__)
    backward.py     the reverse-topological walk; unsupported_operators for `models inspect`
    instrument.py   graph rewrites (BN folding, similarity head, exposed outputs) and the instrumented run
    maps.py         pixel-space gradients, channel sums, bilinear upsampling, smoothing
    compiled.py     the backward pass emitted as ONNX nodes after the forward graph (compiled_rules.py:
                    one emitter per operator), run by onnxruntime in float32

A method (methods/gradient.py, ebp.py, ...) instruments the prepared model, runs it once on the
image, builds a seed at the score and walks back to the input or a layer:

    wb = instrument(model, references=...)
    acts = wb.forward(to_model_input(image[None], model.spec))
    signal = backward(wb.graph, acts.values, wb.seed(acts.values, "excitation", k), "excitation")

`backward` is the numpy reference implementation in float64 and covers every signal kind. The
gradient-like and excitation maps of gradient, guided backprop, deconvnet, EBP, cEBP and tcEBP run
the compiled graph instead when every node on the path has an emitter (falling back to `backward`
otherwise; the map's metadata names the engine and why); tests hold the two engines equal.
"""

from __future__ import annotations

from faceaudit.whitebox.backward import backward, unsupported_operators
from faceaudit.whitebox.instrument import Activations, Instrumented, instrument, instrument_graph
from faceaudit.whitebox.signals import SIGNALS, Signal

__all__ = ["SIGNALS", "Activations", "Instrumented", "Signal", "backward", "instrument", "instrument_graph",
           "unsupported_operators"]
