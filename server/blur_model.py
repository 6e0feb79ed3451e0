"""Serves the person segmentation model behind the page's background blur.

The page blurs what is behind you in the browser, before your video leaves it:
MediaPipe's selfie segmentation (npm ``@mediapipe/selfie_segmentation``, Apache-2.0:
its script, WebAssembly and TFLite model, installed by setup like socket.io-client)
runs in the page and tells the person from the background. The server only hands
out the files, at ``/vendor/selfie_segmentation/``; without the package the page
offers no blur and everything else works.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from .client_bundle import file_handler

logger = logging.getLogger(__name__)

ROUTE = "/vendor/selfie_segmentation"
# What the solution loads (its loader picks the SIMD build where the browser has SIMD).
MODEL_FILES = {
    "selfie_segmentation.js": "application/javascript",
    "selfie_segmentation_solution_simd_wasm_bin.js": "application/javascript",
    "selfie_segmentation_solution_simd_wasm_bin.wasm": "application/wasm",
    "selfie_segmentation_solution_simd_wasm_bin.data": "application/octet-stream",
    "selfie_segmentation_solution_wasm_bin.js": "application/javascript",
    "selfie_segmentation_solution_wasm_bin.wasm": "application/wasm",
    "selfie_segmentation.binarypb": "application/octet-stream",
    "selfie_segmentation.tflite": "application/octet-stream",
    "selfie_segmentation_landscape.tflite": "application/octet-stream",
}


def add_blur_model_routes(app: web.Application, folder: Path) -> bool:
    """Register the model's routes; False (and the page offers no blur) when it is missing."""
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        logger.info(
            "background blur unavailable: %s not found in %s (npm install installs it)",
            ", ".join(missing),
            folder,
        )
        return False
    for name, content_type in MODEL_FILES.items():
        app.router.add_get(f"{ROUTE}/{name}", file_handler(folder / name, content_type))
    return True
