"""Kits for samplers: `drumdiff kit` / `drumdiff.generate_kit` (make), the pads (pads), the kit files (formats).

`pads` and `formats` import only the standard library; `make` imports torch and the pipeline.
"""
