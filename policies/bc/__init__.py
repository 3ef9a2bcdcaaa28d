"""Behaviour cloning with chunked actions from camera images and joint states.

`config.py` (hyperparameters), `model.py` (network + normalisation, torch), `train.py`
(`dexstack train bc`), `export.py` (`dexstack export`: ONNX + manifest), `runtime.py` (the only
module serving code touches: numpy + onnxruntime).
"""
