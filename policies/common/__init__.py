"""What the policy families share: trainer helpers (`training.py`, `runs.py`, `vision.py`; torch),
the export tail (`export.py`, `export_check.py`; torch), and for serving the manifest's normalisation
records (`normalization.py`) and ONNX sessions (`onnx_session.py`), numpy + onnxruntime only."""
