"""OpenVLA (openvla/openvla-7b): fused DINOv2+SigLIP, causal LLaMA-2 7B, 7 action tokens decoded greedily."""
