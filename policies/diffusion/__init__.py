"""Diffusion-policy core shared by the diffusion families (PTP, Diffusion-VLA).

`config.py` (hyperparameters, plain Python), `denoisers.py` (1-D temporal UNet with FiLM and a
causal transformer, torch; both take optional extra condition vectors), `model.py` (observation
encoder, the policy module and its DDPM / EDM losses, torch), `schedulers.py` (noise schedules,
DDIM and EDM/Karras samplers, numpy), `history.py` (observation/action windows, PTP's past-token
mask, the runtime's frame history, numpy), `train.py` (the training loop), `embeddings.py` (PTP's
cached frame features), `export.py` (encoder + per-step denoiser to ONNX), `runtime.py` (numpy +
onnxruntime only: the one module serving code touches) with `verify.py` (PTP self-verification).
"""
