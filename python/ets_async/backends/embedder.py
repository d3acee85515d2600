"""Sentence-transformers embeddings of step texts, computed off the event loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


class SentenceTransformerEmbedder:
    """Loads the model on first use, in its own worker thread, and encodes batches there.

    ``cluster_threshold`` is the clustering cut calibrated for this model (``ets-async calibrate``),
    used when a SearchConfig leaves ``cluster_threshold`` unset.
    """

    def __init__(
        self, model: str, *, device: str = "cpu", batch_size: int = 64, cluster_threshold: float | None = None
    ) -> None:
        self.model_name = model
        self.cluster_threshold = cluster_threshold
        self.device = device
        self.batch_size = batch_size
        self._model: Any = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ets-embed")

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed in the calling thread (blocking); ``embed`` runs this on the worker thread."""
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a loading bar in the middle of a search's progress bar
            self._model = SentenceTransformer(self.model_name, device=self.device)
        vectors = self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._worker, self.encode, list(texts))

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
