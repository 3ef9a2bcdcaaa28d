"""Diffusion-policy core shared by the diffusion families (PTP, Diffusion-VLA).

`config.py` (hyperparameters, plain Python), `denoisers.py` (1-D temporal UNet with FiLM and a
causal transformer, torch), `schedulers.py` (DDPM training, EMA, DDIM and EDM/Karras sampling; the
per-step math is numpy so the runtime runs the same loop), `model.py` (observation encoder),
`export.py` (encoder + per-step denoiser to ONNX), `runtime.py` (numpy + onnxruntime only: the one
module serving code touches).
"""
