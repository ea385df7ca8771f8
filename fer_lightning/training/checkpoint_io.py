"""Checkpoints that are whole or absent: never a half-written file under a checkpoint's name.

Lightning's ``TorchCheckpointIO`` serialises to memory, then writes the bytes straight into the final path, so a
full disk or a kill mid-write leaves a truncated ``epoch_000.ckpt`` that ``torch.load`` cannot read but every
later ``ckpt_path=``, ``evaluate`` and the leaderboard take for a checkpoint. Here the bytes go to a temporary
file beside the target, are flushed to the disk, and are renamed over the target only when complete; a failed
write removes the temporary file (freeing its space) and leaves the earlier file of that name as it was.
``ModelCheckpoint`` deletes the previous best or last checkpoint only after the new one is saved, so after a
failed save the previous one is still there and intact.

Every trainer config uses it (``conf/trainer/default.yaml``)::

    plugins:
      - _target_: fer_lightning.training.checkpoint_io.AtomicCheckpointIO
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from fer_lightning.atomic import atomic_write, write_durably


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic; remote URLs (``s3://``) keep Lightning's own write.

    The checkpoint is serialised in memory first (as Lightning does), so that a full disk is reported as such,
    with the file's name, rather than as an error of torch's zip writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            with atomic_write(path) as tmp:
                write_durably(tmp, buffer.getbuffer())
        except OSError as error:
            raise OSError(
                error.errno,
                f"cannot save the checkpoint {path}: {error.strerror or error} "
                "(not written; earlier checkpoints are intact)",
            ) from error
